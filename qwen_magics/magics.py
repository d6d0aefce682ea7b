"""The ``%%qwen`` / ``%qwen`` and ``%qwen_chat`` magics: parse, build, wire.

The magics do no work of their own: they parse options, expand ``{expr}``,
build a :class:`~qwen_magics.request.Request`, and hand it to a backend and a
renderer.  Errors a user can act on arrive as one line (``UsageError``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from . import runner
from .backends import backend_for, blocking_backend_for
from .backends.errors import translate
from .config import QwenSettings
from .conversation import Conversations, check_name
from .errors import OutputFormatError, QwenMagicsError, ToolApprovalUnavailable
from .expand import expand
from .markdown import render_markdown
from .media import media_url, user_content
from .models import ModelTable, is_local, known, likely_typo
from .options import (choose_model, endpoint_for, json_schema_of, make_request, messages_for, parse_options,
                      partial_message, split_line, system_prompt)
from .render.notebook import NotebookRenderer
from .render.terminal import TerminalRenderer
from .request import Request
from .result import Result
from .tools import converse, tools_from


_FENCED = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n(.*?)^ {0,3}\1[ \t]*$", re.S | re.M)


@magics_class
class QwenMagics(Magics, QwenSettings):
    """Qwen in the notebook; settings via ``%config QwenMagics.<name> = value``."""

    def __init__(self, shell=None, **kwargs) -> None:
        if shell is not None:
            kwargs.setdefault("config", shell.config)  # ipython_config.py and profile settings
        super().__init__(shell=shell, **kwargs)
        self.conversations = Conversations()
        self._live: list[Result] = []
        self._local_notice_shown = False
        self._listed: list[str] | None = None  # what %qwen_models last heard from the endpoint
        if shell is not None:
            shell.events.register("post_run_cell", self._end_of_cell)
            if self not in shell.configurables:  # older IPython does not add magics itself; %config needs it
                shell.configurables.append(self)

    @magic_arguments()
    @argument("-m", "--model", help="model name, e.g. qwen3.5-plus, qwen-flash (default: %%config QwenMagics.model)")
    @argument("-s", "--system", help="system prompt for this request")
    @argument("-t", "--temperature", type=float, help="sampling temperature in [0, 2)")
    @argument("--top-p", type=float, help="nucleus sampling: keep the smallest token set with this probability, (0, 1]")
    @argument("--top-k", type=int, help="sample from the k most likely tokens")
    @argument("--seed", type=int, help="seed for repeatable sampling")
    @argument("--max-tokens", type=int, help="cap on answer tokens")
    @argument("--stop", action="append", metavar="TEXT", help="stop when the model writes TEXT (repeatable)")
    @argument("--thinking", dest="thinking", action="store_const", const=True, default=None, help="ask for reasoning")
    @argument("--no-thinking", dest="thinking", action="store_const", const=False, help="ask for no reasoning")
    @argument("--thinking-budget", type=int, metavar="N", help="cap on reasoning tokens")
    @argument("-f", "--format", choices=["markdown", "text", "code", "json"], default="markdown",
              help="markdown (rendered); text (as written); code (answer's code goes into the next cell); "
                   "json (JSON mode, parsed into result.data)")
    @argument("-o", "--out", metavar="NAME", help="also store the result in the variable NAME")
    @argument("-c", "--chat", nargs="?", const="default", metavar="NAME",
              help="continue conversation NAME (default 'default'); in line mode write --chat=NAME or end options with --")
    @argument("--api", choices=["chat", "responses", "dashscope"],
              help="protocol: OpenAI-compatible Chat Completions (default), the Responses API, or native DashScope")
    @argument("--region", help="singapore, us, beijing, hongkong or frankfurt (keys are region-specific)")
    @argument("--base-url", help="any OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM, Ollama)")
    @argument("--timeout", type=float, metavar="SECONDS", help="seconds to wait for the next byte")
    @argument("--no-stream", action="store_true", help="wait for the whole answer, then show it")
    @argument("--no-expand", action="store_true", help="send {braces} as written instead of expanding {expr}")
    @argument("--schema", metavar="NAME", help="structured output: a JSON Schema dict or pydantic model class "
              "named NAME; the parsed (validated) answer is result.data")
    @argument("--image", action="append", metavar="X", help="attach an image: URL, file path, or a variable "
              "(bytes, PIL image, numpy array); repeatable")
    @argument("--video", action="append", metavar="X", help="attach a video: URL or file path (repeatable)")
    @argument("--prefix", metavar="TEXT",
              help="partial mode: the answer continues TEXT (or the string variable TEXT names); chat and dashscope")
    @argument("--logprobs", type=int, metavar="K",
              help="ask for the top-K alternatives of every token: tinted view, result.logprobs, %%qwen_probs")
    @argument("--tools", metavar="F,G", help="let the model call these Python functions (schema from signature "
              "and docstring); each call is shown and run after you allow it")
    @argument("-y", "--yes", action="store_true", help="with --tools: run the calls without asking")
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
        expansion = expand(template, self.shell.user_ns, max_chars=self.max_value_chars,
                           dataframe_rows=self.dataframe_rows) if not args.no_expand else None
        prompt = (expansion.text if expansion else template).strip()
        if not prompt:
            raise UsageError("The prompt is empty: write it after %qwen, or in the cell body under %%qwen")
        ns = self.shell.user_ns
        content = user_content(prompt, [media_url(x, ns, "image") for x in args.image or ()],
                               [media_url(x, ns, "video") for x in args.video or ()])
        schema, validator = json_schema_of(args.schema, ns) if args.schema else (None, None)
        if schema is not None:
            args.format = "json"  # before the system prompt, which then asks for JSON as -f json does
        messages = messages_for(system_prompt(args, self), content, conversation.messages() if conversation else None)
        if args.prefix is not None:
            messages.append(partial_message(args.prefix, self.shell.user_ns))
        tools = tools_from(args.tools, ns) if args.tools else []
        model, notice = choose_model(args, self)
        request = make_request(args, self, messages, model, schema, tuple(t.spec for t in tools))
        renderer = self._renderer(args.format)
        if guess := likely_typo(model, self._listed):
            renderer.notice(f"{model!r} is not a model this package knows: did you mean {guess!r}? "
                            "(sent as written; %qwen_models lists what the endpoint offers)")
        if notice and not self._local_notice_shown:
            renderer.notice(notice)
            self._local_notice_shown = True
        for warning in expansion.warnings if expansion else ():
            renderer.notice(warning)
        backend = backend_for(request.protocol)  # imports the SDK now, so its import time is not counted as latency
        if tools:
            result = self._ask_with_tools(request, tools, backend, renderer, args)
        else:
            result = self._stream(request, backend, renderer, args.out)
        self._postprocess(args.format, result, validator)
        if conversation is not None and result.complete:
            conversation.add(prompt, result.text, self.history_turns)
        self.track_live(result)
        return result

    def _ask_with_tools(self, request, tools, backend, first_renderer, args) -> Result:
        """Rounds of answer → tool calls → outputs, each round streamed into a renderer of its own."""
        renderers = [first_renderer]

        def one_round(req):
            if req is not request:  # a follow-up round: below the previous round's tool outputs
                renderers.append(self._renderer(args.format))
            return self._stream(req, backend, renderers[-1], args.out)

        approve = (lambda run: True) if args.yes or self.run_tools == "auto" else self._approve
        result = converse(request, tools, one_round, approve, lambda run: renderers[-1].tool_run(run),
                          max_rounds=self.max_tool_rounds, max_chars=self.max_value_chars)
        self._store(result, args.out)
        if result.state == "incomplete" and result.rounds:
            renderers[-1].notice(result.error)
        return result

    def _stream(self, request, backend, renderer, out: str | None) -> Result:
        """One request streamed into one renderer; the result is in ``_qwen`` (and ``out``) from its start."""
        result = Result.for_request(request)
        self._store(result, out)
        try:
            if here := blocking_backend_for(request.protocol):
                runner.run_here(request, here, renderer, result)
            else:
                runner.run(request, backend, renderer, result)
        except KeyboardInterrupt:
            raise UsageError("Stopped by user: the partial answer is kept in _qwen") from None
        return result

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

    def renders_in_notebook(self) -> bool:
        """Rich output (a kernel with a front end), or plain text (a terminal): ``display_mode``."""
        if self.display_mode == "auto":
            return getattr(self.shell, "kernel", None) is not None
        return self.display_mode == "notebook"

    def track_live(self, shown) -> None:
        """``shown`` was streamed into this cell: its ``Out`` should not repeat it (see ``_end_of_cell``)."""
        shown.shown_live = True
        self._live.append(shown)

    def _renderer(self, fmt: str):
        if self.renders_in_notebook():
            return NotebookRenderer(fmt=fmt, interval=self.update_interval)
        return TerminalRenderer(interval=self.update_interval)

    def _postprocess(self, fmt: str, result: Result, validator=None) -> None:
        if fmt == "code":
            blocks = [m.group(2) for m in _FENCED.finditer(result.text)]
            self.shell.set_next_input(("\n".join(blocks) if blocks else result.text).rstrip("\n"), replace=False)
        elif fmt == "json":
            raw = result.text.strip()
            fenced = _FENCED.search(raw)
            try:
                result.data = json.loads(fenced.group(2) if fenced else raw)
            except json.JSONDecodeError as err:
                raise OutputFormatError(f"The answer is not valid JSON ({err.msg} at line {err.lineno})",
                                        "the raw text is kept in _qwen.text; ask again or loosen the request") from err
            if validator is not None:
                try:
                    result.data = validator.model_validate(result.data)
                except ValueError as err:  # pydantic's ValidationError
                    first = str(err).splitlines()[:3]
                    raise OutputFormatError(f"The answer does not match {validator.__name__}: {' '.join(first)}",
                                            "the raw text is kept in _qwen.text and the parsed JSON in _qwen.data") from err

    def _end_of_cell(self, *_):
        """After the cell that streamed a result, displaying it again shows it in full."""
        for result in self._live:
            result.shown_live = False
        self._live.clear()

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
        args = parse_argstring(self.qwen_chat, line)
        try:
            check_name(args.name)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from None
        if args.action == "reset":
            if args.all:
                self.conversations.clear()
            else:
                self.conversations.pop(args.name, None)
            print("All conversations reset." if args.all else f"Conversation {args.name!r} reset.")
        elif args.action == "show":
            if args.name not in self.conversations:
                raise UsageError(f"No conversation {args.name!r}: start one with %%qwen -c {args.name}")
            text = self.conversations[args.name].transcript()
            display({"text/plain": text, "text/html": render_markdown(text)}, raw=True)
        elif not self.conversations:
            print("No conversations yet: start one with %%qwen -c NAME")
        else:
            for name, conv in self.conversations.items():
                print(f"{name}: {len(conv.turns)} turn(s)")

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
        from .backends.openai_chat import list_models

        args = parse_argstring(self.qwen_models, line)
        try:
            endpoint = endpoint_for(self, args.region, args.base_url, None)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from None
        where = endpoint.region or endpoint.base_url
        listed, note = None, None
        asked = not (endpoint.key_required and endpoint.api_key() is None)
        if not asked:
            note = f"set {self.api_key_env} to ask it"
        else:
            try:
                listed = runner.call(list_models(endpoint), timeout=endpoint.timeout + endpoint.connect_timeout)
                self._listed = listed
            except Exception as err:  # noqa: BLE001 - the table is still worth showing, with the reason
                note = translate(err, Request(messages=(), model="", endpoint=endpoint)).line()
        if args.name:
            if args.name in (listed or ()) or known(args.name) or is_local(args.name):
                print(f"{args.name!r} is " + ("offered by " + where if args.name in (listed or ()) else "a known model"))
            elif guess := likely_typo(args.name, listed):
                print(f"{args.name!r} is neither known nor listed: did you mean {guess!r}?")
            else:
                print(f"{args.name!r} is neither known nor listed by {where}")
        return ModelTable(listed, where, self.local_context, note, asked)

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
        from . import install_local, local_model

        args = parse_argstring(self.qwen_local, line)
        try:
            if args.action == "install":
                install_local.install(args.model)
            elif args.action == "unload":
                count = len(local_model.loaded())
                local_model.unload()
                print(f"Unloaded {count} local model(s).")
            else:
                print(local_status(local_model.loaded(), local_model.default_model()))
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err


def local_status(loaded: list[dict], default) -> str:
    """One line per loaded model, or where the default one stands."""
    if not loaded:
        where = "installed" if default.path.exists() else "not installed (run %qwen_local install)"
        return f"No local model loaded; the default is {default.title}, {where}. It loads on first use (-m local)."
    return "\n".join(f"{Path(m['file']).name}: {m['size'] / 2**20:,.0f} MiB, {m['threads']} threads, "
                     f"context {m['context']:,} tokens{', logits on' if m['logits_all'] else ''}" for m in loaded)
