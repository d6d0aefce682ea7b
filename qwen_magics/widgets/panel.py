"""The sampling panel: pick a model, move the sliders, run, compare by eye.

The panel builds a ``%qwen`` option string from its controls and sends it
through the same parser and checks as the magic, so a bad setting reads the
same in both.  "Make these the %%qwen defaults" writes the controls into the
one shared ``QwenMagics`` configuration: there is no second copy to drift.

The panel sends one request at a time, so it keeps within any server's limit
(``QwenMagics.concurrency``): Run stops the run before and waits for it to end
(its stream closed) before it sends.  With a base URL set (``QwenMagics.base_url``)
the model picker offers what that server lists, not Model Studio's catalogue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shlex
from typing import Any, Callable

import ipywidgets as w

from .. import runner
from ..backends import backend_for
from ..errors import QwenMagicsError
from ..models import is_local, picker_options
from ..render.widget import WidgetRenderer
from ..request import Request
from ..result import Result

RequestFactory = Callable[[str, str], Request]
"""Builds a request from an option string and a prompt; raises QwenMagicsError on bad input."""
OnResult = Callable[[Request, Result], None]
"""Called with each run's request and finished result; a refused run (bad settings) is not a run."""

_THINKING = {"default": None, "on": True, "off": False}
_LABEL = {"description_width": "135px"}


class Panel:
    """Controls, Run/Stop, and a streaming output with the magics' footer."""

    def __init__(self, settings: Any, make_request: RequestFactory, list_models: Callable[[], list[str]] | None = None,
                 model: str | None = None, on_result: OnResult | None = None, catalogue: bool = True):
        """``model``: the model to start with, chosen as ``%%qwen`` would (default: the configured one).

        ``catalogue`` false: the requests go to a server other than Model Studio, so the picker offers what
        ``list_models`` gives (and the local models), and picks the first of them if ``model`` is not listed.
        """
        self.settings = settings
        self.make_request = make_request
        self.on_result = on_result
        self.catalogue = catalogue
        s = settings
        self.model = w.Combobox(value=model or s.model, options=picker_options(catalogue=catalogue),
                                description="model", ensure_option=False, style=_LABEL)
        self.temperature = w.FloatSlider(value=0.7 if s.temperature is None else s.temperature, min=0, max=1.99,
                                         step=0.05, description="temperature", readout_format=".2f", style=_LABEL)
        self.top_p = w.FloatSlider(value=0.8 if s.top_p is None else s.top_p, min=0.01, max=1.0, step=0.01,
                                   description="top_p", readout_format=".2f", style=_LABEL)
        self.top_k = w.BoundedIntText(value=s.top_k or 0, min=0, max=1000, description="top_k (0: off)", style=_LABEL)
        self.max_tokens = w.BoundedIntText(value=s.max_tokens or 0, min=0, max=131072, description="max tokens (0: off)", style=_LABEL)
        self.seed = w.Text(value="" if s.seed is None else str(s.seed), description="seed", placeholder="random", style=_LABEL)
        self.thinking = w.ToggleButtons(options=list(_THINKING), value=_label(s.thinking), description="thinking",
                                         style={**_LABEL, "button_width": "110px"})
        self.thinking_budget = w.BoundedIntText(value=s.thinking_budget or 0, min=0, max=131072,
                                                description="budget (0: off)", style=_LABEL)
        self.presence_penalty = w.FloatSlider(value=s.presence_penalty or 0.0, min=-2, max=2, step=0.1,
                                              description="presence pen.", readout_format=".1f", style=_LABEL,
                                              tooltip="above 0: words already used are less likely again (0: off)")
        self.repetition_penalty = w.FloatSlider(value=s.repetition_penalty or 1.0, min=0.5, max=2, step=0.05,
                                                description="repetition pen.", readout_format=".2f", style=_LABEL,
                                                tooltip="above 1: repeating earlier tokens is penalised (1: off)")
        self.search = w.Checkbox(value=bool(s.search), description="web search", indent=False,
                                 tooltip="enable_search: the model may search the web; cited pages are listed")
        self.system = w.Textarea(value=s.system, placeholder="system prompt (optional)", layout=w.Layout(width="100%"))
        self.prompt = w.Textarea(placeholder="prompt", layout=w.Layout(width="100%", height="80px"))
        self.run_button = w.Button(description="Run", icon="play", button_style="primary")
        self.stop_button = w.Button(description="Stop", icon="stop")
        self.defaults_button = w.Button(description="Make these the %%qwen defaults", layout=w.Layout(width="auto"))
        self.output = w.VBox()
        self.result: Result | None = None
        self._task: concurrent.futures.Future | None = None
        self._turn: asyncio.Lock | None = None  # made on the package's loop, by the first run
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.defaults_button.on_click(lambda _: self.make_defaults())
        controls = [self.model, self.temperature, self.top_p, self.top_k, self.presence_penalty, self.max_tokens,
                    self.seed, self.thinking, self.thinking_budget, self.repetition_penalty]
        self.widget = w.VBox([w.HBox([w.VBox(controls[:5]), w.VBox(controls[5:])]), self.search, self.system,
                              self.prompt,
                              w.HBox([self.run_button, self.stop_button, self.defaults_button]), self.output])
        if list_models is not None:
            runner.submit(self._add_listed(list_models))

    def options(self) -> str:
        """The controls as ``%qwen`` options."""
        tokens = ["-m", self.model.value, "-t", f"{self.temperature.value:g}", "--top-p", f"{self.top_p.value:g}"]
        for flag, value in (("--top-k", self.top_k.value), ("--max-tokens", self.max_tokens.value),
                            ("--thinking-budget", self.thinking_budget.value)):
            if value:
                tokens += [flag, str(value)]
        if self.seed.value.strip():
            tokens += ["--seed", self.seed.value.strip()]
        if self.presence_penalty.value:
            tokens += ["--presence-penalty", f"{self.presence_penalty.value:g}"]
        if self.repetition_penalty.value != 1:
            tokens += ["--repetition-penalty", f"{self.repetition_penalty.value:g}"]
        if self.search.value:
            tokens.append("--search")
        thinking = _THINKING[self.thinking.value]
        if thinking is not None:
            tokens.append("--thinking" if thinking else "--no-thinking")
        if self.system.value.strip():
            tokens += ["-s", self.system.value]
        return shlex.join(tokens)

    def run(self) -> concurrent.futures.Future:
        """Start a run in the background; the output streams into the panel."""
        self.stop()
        self._task = runner.submit(self._run(self.options(), self.prompt.value))
        return self._task

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def make_defaults(self) -> None:
        """Write the controls into the shared configuration (``%config QwenMagics``)."""
        s = self.settings
        s.model, s.temperature, s.top_p = self.model.value, self.temperature.value, self.top_p.value
        s.top_k, s.max_tokens = self.top_k.value or None, self.max_tokens.value or None
        s.seed = int(self.seed.value) if self.seed.value.strip().isdigit() else None
        s.thinking, s.thinking_budget = _THINKING[self.thinking.value], self.thinking_budget.value or None
        s.presence_penalty = self.presence_penalty.value or None
        s.repetition_penalty = None if self.repetition_penalty.value == 1 else self.repetition_penalty.value
        s.search = self.search.value
        s.system = self.system.value

    async def _run(self, options: str, prompt: str) -> Result:
        self._turn = self._turn or asyncio.Lock()
        async with self._turn:  # the run before, just stopped, ends (and writes its last line) first
            renderer = WidgetRenderer(self.output, interval=self.settings.update_interval)
            try:
                request = self.make_request(options, prompt)
            except QwenMagicsError as err:
                self.result = runner.refused(renderer, err, model=self.model.value)
                return self.result
            self.result = result = Result.for_request(request)
            try:
                await runner.drive(backend_for(request.protocol)(request), renderer, result)
            finally:  # a stopped run is logged too, with its partial answer
                if self.on_result is not None:
                    self.on_result(request, result)
        return result

    async def _add_listed(self, list_models: Callable[[], Any]) -> None:
        first = self.model.value
        try:
            listed = await list_models()
        except Exception:  # noqa: BLE001 - the known models are still offered
            return
        self.model.options = picker_options(listed, self.catalogue)
        if not self.catalogue and listed and self.model.value == first and first not in listed and not is_local(first):
            self.model.value = listed[0]


def _label(thinking: bool | None) -> str:
    return next(k for k, v in _THINKING.items() if v is thinking)
