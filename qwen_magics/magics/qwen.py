"""The ``%%qwen`` / ``%qwen`` magic, and the small ones beside it: parse, prepare, wire.

The magics do no work of their own: they parse options, hand them to
:func:`~qwen_magics.options.build.prepare` for a checked request, and drive it with
:func:`~qwen_magics.runner.run` into a renderer; what comes after (``-f code``,
``-f json``) is :mod:`~qwen_magics.display.postprocess`, and the secondary magics'
work is in :mod:`~qwen_magics.magics.commands`.  Errors a user can act on arrive as
one line (``UsageError``).
"""

from __future__ import annotations

from functools import partial

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from . import commands
from .. import runner
from ..runlog.recorder import Recorder
from ..backends import backend_for
from ..options.config import ConfigView, QwenSettings
from ..options.context import Context
from ..conversation import Conversations
from ..errors import QwenMagicsError, ToolApprovalUnavailable
from ..options.build import prepare
from ..options.declare import column_options, options_from, parse_options, request_arguments, split_line
from ..display.postprocess import code_of, parse_json, validate
from ..runlog.replay import replay
from ..render.notebook import NotebookRenderer
from ..render.terminal import TerminalRenderer
from ..result import Result
from ..tools import converse


@magics_class
class QwenMagics(Magics, QwenSettings):
    """Qwen in the notebook; settings via ``%config QwenMagics.<name> = value``."""

    def __init__(self, shell=None, **kwargs) -> None:
        if shell is not None:
            kwargs.setdefault("config", shell.config)  # ipython_config.py and profile settings
        super().__init__(shell=shell, **kwargs)
        self.conversations = Conversations()
        self._live: list = []  # results and comparisons streamed into the running cell
        self._listed: list[str] | None = None  # what %qwen_models last heard from the endpoint
        config = ConfigView(self)
        self.context = Context(config, Recorder(config, shell), partial(column_options, self.qwen.parser),
                               self.track_live, in_kernel=getattr(shell, "kernel", None) is not None)
        """What the other magics and the widgets are given (this class's settings and services, not itself)."""
        if shell is not None:
            shell.events.register("post_run_cell", self._end_of_cell)
            shown = shell.display_formatter.ipython_display_formatter
            shown.for_type(Result, self._display)
            shown.for_type_by_name("qwen_magics.widgets.compare", "Comparison", self._display)
            if self not in shell.configurables:  # older IPython does not add magics itself; %config needs it
                shell.configurables.append(self)

    @magic_arguments()
    @request_arguments()
    @argument("-n", type=int, metavar="K", help="K answers to the prompt (1-4), one after another")
    @argument("-f", "--format", choices=["markdown", "text", "code", "json"], default="markdown",
              help="markdown (rendered); text (as written); code (answer's code goes into the next cell); "
                   "json (JSON mode, parsed into result.data)")
    @argument("-o", "--out", metavar="NAME", help="also store the result in the variable NAME")
    @argument("-c", "--chat", nargs="?", const="default", metavar="NAME",
              help="continue conversation NAME (default 'default'); in line mode write --chat=NAME or end options with --")
    @argument("--no-expand", action="store_true", help="send {braces} as written instead of expanding {expr}")
    @argument("--image", action="append", metavar="X", help="attach an image: URL, file path, or a variable "
              "(bytes, PIL image, numpy array); repeatable")
    @argument("--video", action="append", metavar="X", help="attach a video: URL or file path (repeatable)")
    @argument("--logprobs", type=int, metavar="K",
              help="ask for the top-K alternatives of every token: tinted view, result.logprobs, %%qwen_probs")
    @argument("--tools", metavar="F,G", help="let the model call these Python functions (schema from signature "
              "and docstring); each call is shown and run after you allow it")
    @argument("-y", "--yes", action="store_true", help="with --tools: run the calls without asking")
    @argument("--no-log", action="store_true", help="keep this run out of the run log (a sensitive prompt)")
    @argument("--cache", action="store_true", help="answer from the run log if this exact request ran before "
              "(nothing is sent; not a new sample); default: %%config QwenMagics.cache")
    @argument("prompt", nargs="*", help="line mode: the prompt (cell mode: the cell body is the prompt)")
    @no_var_expand
    @line_cell_magic
    def qwen(self, line: str, cell: str | None = None):
        """Ask a Qwen model; its reasoning and answer stream into the output.

        Examples::

            %%qwen -m qwen3.5-plus -t 0.7 --top-p 0.8
            Explain what {topic} means, in three bullet points.

            %qwen -f code a function that reverses a linked list
            %%qwen -c tutor        (continue the conversation "tutor")

            %%qwen --tools get_weather
            Should I take an umbrella in Paris today?

        ``{expr}`` is replaced by the value of a Python expression (``{{`` and
        ``}}`` are literal braces).  The result is returned, kept in ``_qwen``,
        and stored under NAME with ``-o NAME``; ``str(result)`` is the answer.
        Settings: ``%config QwenMagics``.  Conversations: ``%qwen_chat``.
        """
        tokens, rest = split_line(self.qwen.parser, line, cell_mode=cell is not None)
        args = parse_options(self.qwen.parser, tokens, "qwen")
        if cell is not None and rest:
            raise UsageError(f"Unexpected text on the %%qwen line: {rest!r}: put the prompt in the cell body")
        try:
            return self._ask(args, cell if cell is not None else rest)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err

    def _ask(self, args, template: str) -> Result:
        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"-o {args.out!r} is not a Python name: use e.g. -o answer")
        conversation = self.conversations.get_or_create(args.chat) if args.chat is not None else None
        prepared = prepare(self, options_from(args), template, self.shell.user_ns, listed=self._listed,
                           history=conversation.messages() if conversation else None)
        request = prepared.request
        renderer = self._renderer(prepared.format)
        if prepared.model_notice and self.context.once("local model"):
            renderer.notice(prepared.model_notice)
        for notice in prepared.notices:
            renderer.notice(notice)
        self.context.run_log.show_warnings()
        logged = self._cached(request, prepared, args, renderer)
        if logged is not None:
            result = self._replay(request, logged, renderer, args.out)
        else:
            result = self._answers(request, prepared, renderer, args)
        self.track_live(result)
        if result.error_kind is not None:  # the run failed: its line is the cell's error (the footer names the state)
            raise UsageError(result.error)
        self._postprocess(prepared.format, result, prepared.validator)
        if conversation is not None and result.complete:
            conversation.add(prepared.prompt, result.text, self.history_turns)
        return result

    def _answers(self, request, prepared, renderer, args) -> Result:
        """The answer, or with ``-n K`` where one request cannot carry ``n``, K answers from K requests in turn."""
        backend = backend_for(request.protocol)  # imports the SDK now: its import time is not latency
        results: list[Result] = []
        for k in range(prepared.requests):
            if k:
                renderer = self._renderer(prepared.format)
                renderer.heading(f"Answer {k + 1} of {prepared.requests}")
            if prepared.tools:
                results.append(self._ask_with_tools(request, prepared, backend, renderer, args))
            else:
                results.append(self._stream(request, backend, renderer, args))
            self._log(request, results[-1], args)
            if not results[-1].complete:
                break
        result = results[0].with_choices(results[1:]) if len(results) > 1 else results[0]
        self._store(result, args.out)
        return result

    def _ask_with_tools(self, request, prepared, backend, first_renderer, args) -> Result:
        """Rounds of answer → tool calls → outputs, each round streamed into a renderer of its own."""
        renderers = [first_renderer]

        def one_round(req):
            if req is not request:  # a follow-up round: below the previous round's tool outputs
                renderers.append(self._renderer(prepared.format))
            return self._stream(req, backend, renderers[-1], args)

        approve = (lambda run: True) if args.yes or self.run_tools == "auto" else self._approve
        result = converse(request, prepared.tools, one_round, approve, lambda run: renderers[-1].tool_run(run),
                          max_rounds=self.max_tool_rounds, max_chars=self.max_value_chars)
        self._store(result, args.out)
        if result.state == "incomplete" and result.rounds:
            renderers[-1].notice(result.error)
        return result

    def _stream(self, request, backend, renderer, args) -> Result:
        """One request streamed into one renderer; the result is in ``_qwen`` (and ``-o``) from its start.

        A run stopped with Ctrl-C is logged here, with its partial answer.
        """
        result = Result.for_request(request)
        self._store(result, args.out)
        try:
            runner.run(backend(request), renderer, result)
        except KeyboardInterrupt:
            self._log(request, result, args)
            raise UsageError("Stopped by user: the partial answer is kept in _qwen") from None
        return result

    def _cached(self, request, prepared, args, renderer):
        """With ``--cache`` (or ``QwenMagics.cache``): the logged run that answered this exact request, if any."""
        if not (args.cache or self.cache):
            return None
        if not self.log:
            renderer.notice("--cache reads the run log, which is off (%config QwenMagics.log = False): "
                            "the request is sent")
            return None
        if prepared.tools or request.logprobs:
            renderer.notice("--cache does not answer --tools or --logprobs cells (the tools run now; the log "
                            "keeps no token probabilities): the request is sent")
            return None
        return self.context.run_log.cached(request)

    def _replay(self, request, logged, renderer, out: str | None) -> Result:
        """The logged answer shown through the driver as a live one would be; nothing is sent, nothing logged."""
        result = Result.for_request(request)
        result.cached_from = logged.id
        self._store(result, out)
        return runner.run(replay(logged), renderer, result)

    def _log(self, request, result: Result, args) -> None:
        """Queue the run for the run log (after its answer is shown), unless ``--no-log``."""
        if not args.no_log:
            self.context.run_log.record(request, result, conversation=args.chat)

    def _store(self, result: Result, out: str | None) -> None:
        self.shell.user_ns["_qwen"] = result
        if out:
            self.shell.user_ns[out] = result

    def _approve(self, run) -> bool:
        """Ask in the front end before running a call the model made (y to run it)."""
        try:
            answer = input(f"Run {run.call_text()}? [y/N] ")
        except KeyboardInterrupt:
            raise UsageError("Stopped by user before running a tool: the answer so far is in _qwen") from None
        except (EOFError, OSError, RuntimeError) as exc:  # StdinNotImplementedError is a RuntimeError
            raise ToolApprovalUnavailable(run.call_text()) from exc
        return answer.strip().lower() in ("y", "yes")

    def track_live(self, shown) -> None:
        """``shown`` was streamed into this cell: the cell's ``Out`` should not show it again."""
        self._live.append(shown)

    def _display(self, value) -> None:
        """How a result or comparison displays: in full, unless it was just streamed into this cell."""
        for i, live in enumerate(self._live):
            if live is value:
                del self._live[i]
                return
        display(value.bundle() if hasattr(value, "bundle") else value._repr_mimebundle_(), raw=True)

    def _end_of_cell(self, *_):
        """After the cell that streamed a result, displaying it again shows it in full; log warnings show here."""
        self._live.clear()
        self.context.run_log.end_of_cell()

    def _renderer(self, fmt: str):
        """A renderer for this cell; the cell raises a failed run's error, so the renderer does not repeat it."""
        if self.context.renders_in_notebook():
            return NotebookRenderer(fmt=fmt, interval=self.update_interval, separate_error=True)
        return TerminalRenderer(interval=self.update_interval, separate_error=True)

    def _postprocess(self, fmt: str, result: Result, validator=None) -> None:
        if fmt == "code":
            self.shell.set_next_input(code_of(result.text), replace=False)
        elif fmt == "json":
            result.data = parse_json(result.text)
            if validator is not None:
                result.data = validate(result.data, validator)

    @magic_arguments()
    @argument("action", nargs="?", default="list", choices=["list", "show", "reset"],
              help="list conversations, show one, or reset one (all with --all)")
    @argument("name", nargs="?", default="default", help="conversation name (default 'default')")
    @argument("--all", action="store_true", help="with reset: forget every conversation")
    @line_magic
    def qwen_chat(self, line: str):
        """List, show and reset the conversations that ``%%qwen -c NAME`` continues.

        Examples::

            %qwen_chat                 list conversations and their turn counts
            %qwen_chat show tutor      show the turns of "tutor"
            %qwen_chat reset tutor     forget "tutor" (reset --all: forget all)
        """
        try:
            commands.chat(self.conversations, parse_argstring(self.qwen_chat, line))
        except QwenMagicsError as err:
            raise UsageError(err.line()) from None

    @magic_arguments()
    @argument("name", nargs="?", help="check this model name: known, listed, or a likely typo")
    @argument("--region", help="ask this region's endpoint (default: %%config QwenMagics.region)")
    @argument("--base-url", help="ask this OpenAI-compatible server instead")
    @line_magic
    def qwen_models(self, line: str):
        """The models the endpoint offers (its /models route), next to the known table.

        The table gives each known model's context window, whether it can think
        and whether it thinks by default; the endpoint's answer says which ones
        your key can use here.  With NAME, says whether the name is known or
        listed, and what it was probably meant to be.

        Examples::

            %qwen_models                        the table, and what this region offers
            %qwen_models qwen-plsu              "did you mean 'qwen-plus'?"
            %qwen_models --base-url http://localhost:8000/v1
        """
        try:
            table, listed = commands.models(self.context.config, parse_argstring(self.qwen_models, line))
        except QwenMagicsError as err:
            raise UsageError(err.line()) from None
        if listed is not None:
            self._listed = listed
        return table

    @magic_arguments()
    @argument("action", nargs="?", default="list", choices=["list", "show", "df", "cost", "rm", "path"],
              help="list (default) or search runs; show one; df: all as a DataFrame; cost: totals per model and day; "
                   "rm: delete; path: where the log is")
    @argument("id", nargs="?", help="with show or rm: a run's id (or its first characters)")
    @argument("-n", type=int, default=20, metavar="N", help="list the last N runs (default 20)")
    @argument("-q", "--query", metavar="TEXT", help="list the runs whose prompt or answer has every word of TEXT")
    @argument("--since", metavar="DATE", help="with cost: from this day (2025-01-31) or time on")
    @argument("--before", metavar="DATE", help="with rm: delete every run started before this day or time")
    @line_magic
    def qwen_log(self, line: str):
        """The run log: every %%qwen cell, comparison column and panel run, kept in a SQLite file.

        Examples::

            %qwen_log                      the last 20 runs: time, model, prompt, temperature, group, tokens, state, id
            %qwen_log -n 50 -q entropy     the last 50 runs whose prompt or answer mentions entropy
            %qwen_log show 1a2b3c4d        a run as it was shown: reasoning, answer, footer
            %qwen_log df                   every run as a pandas DataFrame
            %qwen_log cost --since 2025-01-01   tokens (and cost, with QwenMagics.prices) per model and day
            %qwen_log rm 1a2b3c4d          delete a run (rm --before 2025-01-01: every older run)
            %qwen_log path                 the file (for sqlite3, or jupysql's %sql sqlite:///PATH)

        ``%%qwen --no-log`` keeps one cell out; ``%config QwenMagics.log = False``
        turns the log off; ``QwenMagics.log_path`` or ``$QWEN_MAGICS_LOG`` moves it.
        """
        try:
            return commands.run_log(self.context.run_log, parse_argstring(self.qwen_log, line), self.prices)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from None
        finally:
            self.context.run_log.show_warnings()

    @magic_arguments()
    @argument("action", nargs="?", default="status", choices=["status", "unload", "install"],
              help="status: what is loaded; unload: free its memory; install: build the runtime and fetch a model")
    @argument("--model", choices=["1.5b", "0.5b"], default="1.5b", help="with install: which model (default 1.5b)")
    @line_magic
    def qwen_local(self, line: str):
        """The Qwen model that runs in this kernel, with no key and no network (``-m local``).

        Examples::

            %qwen_local                      what is loaded: file, size, threads, context
            %qwen_local unload               free the memory
            %qwen_local install --model 0.5b build the runtime and fetch the 0.5B model (once)
        """
        try:
            commands.local(parse_argstring(self.qwen_local, line))
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err


def context_of(shell) -> Context:
    """The :class:`~qwen_magics.options.context.Context` of the extension loaded in ``shell``."""
    return shell.magics_manager.registry["QwenMagics"].context
