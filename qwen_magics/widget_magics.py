"""``%qwen_panel``, ``%%qwen_compare`` and ``%qwen_probs``: the widget magics.

They share the one ``QwenMagics`` configuration and build every request with
the ``%qwen`` option parser, so widgets and magics accept, check and report
options identically.  The widget modules import ipywidgets, so they are
imported here on first use, not when the extension loads.
"""

from __future__ import annotations

import argparse
import re
import uuid
from functools import partial

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display, update_display
from IPython.utils.process import arg_split

from . import runner
from .backends import backend_for
from .errors import InvalidInput, QwenMagicsError
from .expand import expand
from .options import choose_model, endpoint_for, parse_options, prepare, split_line
from .request import Request
from .text import footer_text

_AXES = {"model": "-m", "temperature": "-t", "top_p": "--top-p", "seed": "--seed", "thinking": "--thinking",
         "presence_penalty": "--presence-penalty", "repetition_penalty": "--repetition-penalty"}
_COMMON = {"system": "-s", "max_tokens": "--max-tokens", "top_k": "--top-k", "region": "--region",
           "base_url": "--base-url", "logprobs": "--logprobs", "timeout": "--timeout", "api": "--api"}
_CONCURRENCY = 4  # columns streaming at once when --concurrency is not given
_VARIANT_SEPARATOR = re.compile(r"^[ \t]*---[ \t]*$", re.M)


@magics_class
class QwenWidgetMagics(Magics):
    """Widgets over the settings of ``QwenMagics`` (passed in: one configuration object)."""

    def __init__(self, shell, settings) -> None:
        super().__init__(shell=shell)
        self.settings = settings

    def request_factory(self, prompt: str):
        """Build a request from a ``%qwen`` option string, as the magic would; errors as QwenMagicsError."""
        parser = self.settings.qwen.parser

        def make(options: str, text: str = prompt) -> Request:
            try:
                tokens, rest = split_line(parser, options, cell_mode=True)
                args = parse_options(parser, tokens, "qwen")
            except UsageError as err:
                raise InvalidInput(str(err)) from None
            if rest:
                raise InvalidInput(f"Unexpected text in the options: {rest!r}", "give options only, e.g. -m qwen-plus -t 0.7")
            if not text.strip():
                raise InvalidInput("The prompt is empty", "type a prompt first")
            for flag, value in (("--tools", args.tools), ("--image", args.image), ("--video", args.video),
                                ("--prefix", args.prefix), ("--schema", args.schema), ("-c/--chat", args.chat),
                                ("--cache", args.cache)):
                if value:
                    raise InvalidInput(f"{flag} works in %%qwen cells, not in comparisons or the panel",
                                       "drop it from these options")
            if args.no_log:
                raise InvalidInput("--no-log applies to a whole comparison, not to one column",
                                   "put it on the %%qwen_compare line, or %config QwenMagics.log = False")
            args.no_expand = True  # the prompt was expanded once, for every column
            return prepare(self.settings, args, text, self.shell.user_ns).request

        return make

    @line_magic
    def qwen_panel(self, line: str = ""):
        """Show the sampling panel: model picker, temperature/top_p/top_k/seed/thinking, Run and Stop.

        Its "Make these the %%qwen defaults" button sets ``%config QwenMagics``.
        """
        panel = self.make_panel()
        display(panel.widget)
        return None

    def make_panel(self):
        from .backends.openai_chat import list_models
        from .widgets.panel import Panel

        make = self.request_factory("")
        model, _ = choose_model(argparse.Namespace(model=None, base_url=None, region=None), self.settings)
        catalogue = True
        try:
            endpoint = endpoint_for(self.settings, None, None, None)
            listing = (lambda: list_models(endpoint)) if endpoint.api_key() or not endpoint.key_required else None
            catalogue = endpoint.region is not None  # a base URL: offer that server's models alone
        except QwenMagicsError:
            listing = None
        return Panel(self.settings, lambda options, prompt: make(options, prompt), listing, model=model,
                     on_result=self._logger("panel"), catalogue=catalogue)

    def _logger(self, kind: str):
        """The callback a widget calls with each finished run: into the run log, grouped under one new id."""
        return partial(self.settings.run_log.record, group_id=uuid.uuid4().hex, group_kind=kind)

    @magic_arguments()
    @argument("-m", "--model", help="models, comma-separated: -m qwen3.5-plus,qwen-flash,local")
    @argument("-t", "--temperature", help="temperatures, comma-separated: -t 0,0.7,1.3")
    @argument("--top-p", help="top_p values, comma-separated: --top-p 0.1,0.5,1")
    @argument("--seed", help="seeds, comma-separated: --seed 1,2,3")
    @argument("--thinking", nargs="?", const="on", help="on, off, or on,off (compare reasoning against none)")
    @argument("--no-thinking", dest="thinking", action="store_const", const="off", help="no reasoning, every column")
    @argument("--presence-penalty", help="presence penalties, comma-separated: --presence-penalty 0,1.5")
    @argument("--repetition-penalty", help="repetition penalties, comma-separated: --repetition-penalty 1,1.3")
    @argument("--variants", action="store_true",
              help="the cell holds several prompts, separated by lines of only ---: each is a column (an axis)")
    @argument("--grid", action="store_true", help="cross the lists (e.g. a temperature x top_p grid) instead of zipping them")
    @argument("-n", "--repeat", type=int, default=1, metavar="K", help="run each setting K times to show sampling variance")
    @argument("-s", "--system", help="system prompt for every column")
    @argument("--max-tokens", type=int, help="cap on answer tokens, every column")
    @argument("--top-k", type=int, help="top-k, every column")
    @argument("--logprobs", type=int, metavar="K", help="token probabilities, every column")
    @argument("--api", choices=["chat", "responses", "dashscope"], help="protocol, every column")
    @argument("--region", help="Model Studio region, every column")
    @argument("--base-url", help="OpenAI-compatible server, every column")
    @argument("--timeout", type=float, help="seconds to wait for the next byte")
    @argument("--concurrency", type=int,
              help="columns streaming at once (default 4, and a server's QwenMagics.concurrency entry)")
    @argument("-o", "--out", metavar="NAME", help="also store the comparison in NAME (always in _qwen_compare)")
    @argument("--no-expand", action="store_true", help="send {braces} as written")
    @argument("--no-log", action="store_true", help="keep this comparison's runs out of the run log")
    @no_var_expand
    @cell_magic
    def qwen_compare(self, line: str, cell: str):
        """Run one prompt in columns side by side: models and sampling settings, streaming at once.

        Examples::

            %%qwen_compare -m qwen3.5-plus,qwen-flash
            %%qwen_compare -t 0,0.7,1.3 -n 3          (3 repeats of each temperature)
            %%qwen_compare --grid -t 0.3,1.3 --top-p 0.2,1

        Lists of the same length are zipped, --grid crosses them.  Every column
        can be edited and re-run alone; Stop (or the kernel's stop) cancels all.
        A server that serves one request at a time (llama.cpp's) needs
        --concurrency 1, or once: %config QwenMagics.concurrency = {URL: 1}.
        The comparison is returned (``.rows``, ``.to_dataframe()``, ``.to_markdown()``).
        """
        args = parse_options(self.qwen_compare.parser, arg_split(line), "qwen_compare")
        try:
            return self._compare(args, cell)
        except QwenMagicsError as err:
            raise UsageError(err.line()) from err

    def _compare(self, args: argparse.Namespace, cell: str):
        from .widgets.compare import Comparison, column_specs

        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"-o {args.out!r} is not a Python name: use e.g. -o runs")
        if args.repeat < 1 or (args.concurrency is not None and args.concurrency < 1):
            raise UsageError("-n and --concurrency must be 1 or more")
        expansion = None if args.no_expand else expand(cell, self.shell.user_ns, max_chars=self.settings.max_value_chars,
                                                       dataframe_rows=self.settings.dataframe_rows)
        prompt = (expansion.text if expansion else cell).strip()
        axes = {option: _split(getattr(args, name)) for name, option in _AXES.items()}
        common = [tok for name, option in _COMMON.items() if getattr(args, name) is not None
                  for tok in (option, str(getattr(args, name)))]
        variants = _variants(prompt) if args.variants else []
        specs = column_specs(axes, args.grid, args.repeat, common, variants)
        make = self.request_factory(prompt)
        requests = [make(spec.options, spec.prompt or prompt) for spec in specs]  # all checked before sending
        for request in requests:
            backend_for(request.protocol)  # and its SDK imported now, not in the first column's latency
        comparison = Comparison(prompt, specs, make, concurrency=args.concurrency or _CONCURRENCY,
                                per_server=self.settings.concurrency if args.concurrency is None else {},
                                interval=self.settings.update_interval,
                                on_result=None if args.no_log else self._logger("comparison"))
        for warning in [*(expansion.warnings if expansion else ()), *_turns_notice(requests)]:
            print(f"⚠ {warning}")
        self.shell.user_ns["_qwen_compare"] = comparison
        if args.out:
            self.shell.user_ns[args.out] = comparison
        notebook = self.settings.renders_in_notebook()
        display_id = None
        if notebook:
            display_id = display(comparison.bundle(), raw=True, display_id=True).display_id
        self._run_blocking(comparison)
        if notebook:
            update_display(comparison.bundle(), raw=True, display_id=display_id)  # the static export, now filled
        else:
            for row, result in zip(comparison.columns, comparison.results):
                print(f"── {row.spec.label} ──\n{result.text}\n[{footer_text(result)}]\n")
        self.settings.track_live(comparison)
        return comparison

    def _run_blocking(self, comparison) -> None:
        try:
            runner.block(comparison.run_all())
        except KeyboardInterrupt:
            raise UsageError("Stopped by user: every column keeps its partial answer (in _qwen_compare)") from None

    @magic_arguments()
    @argument("name", nargs="?", default="_qwen", help="a result from %%qwen --logprobs K (default: _qwen)")
    @argument("--position", type=int, help="token to start at (default: the most uncertain one)")
    @line_magic
    def qwen_probs(self, line: str):
        """Explore how sampling picks each token: the next-token distribution with temperature and top_p sliders.

        Examples::

            %qwen -m local --logprobs 5 -t 0 The capital of France is
            %qwen_probs                      the last result
            %qwen_probs answer --position 3
        """
        from .widgets.probs import probs_widget

        args = parse_argstring(self.qwen_probs, line)
        if args.name not in self.shell.user_ns:
            raise UsageError(f"No result named {args.name!r}: run %%qwen --logprobs 5 first")
        try:
            display(probs_widget(self.shell.user_ns[args.name], args.position))
        except ValueError as err:
            raise UsageError(str(err)) from None


def _turns_notice(requests: list[Request]) -> list[str]:
    """Said once above the columns: local columns share one model, so they take turns."""
    local = sum(request.protocol == "local" for request in requests)
    if local < 2:
        return []
    others = ", the other columns at the same time" if local < len(requests) else ""
    return [f"The local model answers one column at a time: its {local} columns run one after another{others}"]


def _variants(prompt: str) -> list[str]:
    """``--variants``: the prompts of a cell, separated by lines holding only ``---``."""
    variants = [part.strip() for part in _VARIANT_SEPARATOR.split(prompt)]
    if len(variants) < 2 or not all(variants):
        raise InvalidInput("--variants needs two or more prompts separated by lines holding only ---",
                           "write each phrasing of the prompt, with a line of --- between them")
    return variants


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []
