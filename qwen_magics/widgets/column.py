"""One column's controls: a model picker and the sampling settings, as ``%qwen`` options.

The panel and ``%%qwen_compare`` show the same controls in each column.  A
slider's "default" box sends nothing for that setting (``%%qwen``'s default
applies: ``QwenMagics``, else the model's own); moving the slider clears it.
The number boxes send nothing at 0 (empty for the seed).  Every control has a
link toggle; what a linked control does in every column is the caller's
(:class:`~qwen_magics.widgets.compare.Comparison`), told through ``on_change``.
"""

from __future__ import annotations

import shlex
from typing import Any, Callable

import ipywidgets as w

from ..models import LOCAL_LACKS, picker_options, unsupported_controls

_THINKING = {"default": None, "on": True, "off": False}
_LABEL = {"description_width": "92px"}
_ROW = w.Layout(width="100%")
SLIDERS = {  # name: flag, description, min, max, step, readout format, shown value when unset
    "temperature": ("-t", "temperature", 0.0, 1.99, 0.05, ".2f", 0.7),
    "top_p": ("--top-p", "top_p", 0.01, 1.0, 0.01, ".2f", 0.8),
    "presence_penalty": ("--presence-penalty", "presence pen.", -2.0, 2.0, 0.1, ".1f", 0.0),
    "repetition_penalty": ("--repetition-penalty", "repetition pen.", 0.5, 2.0, 0.05, ".2f", 1.0),
}
NUMBERS = {  # name: flag, description, max; 0 sends nothing
    "top_k": ("--top-k", "top_k", 1000),
    "max_tokens": ("--max-tokens", "max tokens", 131072),
    "thinking_budget": ("--thinking-budget", "think budget", 131072),
}
CONTROLS = ("model", "temperature", "top_p", "top_k", "seed", "presence_penalty", "repetition_penalty", "max_tokens",
            "thinking", "thinking_budget", "search")
"""Every control of a column, in the order their options are written."""
"""Column controls disabled for the local model: it cannot search or think, so they are greyed and not sent."""
_FLAGS = {"-m": "model", "--model": "model", "--temperature": "temperature", "--seed": "seed",
          **{spec[0]: name for name, spec in {**SLIDERS, **NUMBERS}.items()}}
_TIPS = {"presence_penalty": "above 0: words already used are less likely again",
         "repetition_penalty": "above 1: repeating earlier tokens is penalised"}


class ColumnControls:
    """The widgets of one column's settings, named as the options they set (``.model``, ``.temperature``, ...)."""

    def __init__(self, catalogue: bool = True, default_model: str = "") -> None:
        """``default_model``: what an empty picker runs (the placeholder says so)."""
        self.model = w.Combobox(value="", options=picker_options(catalogue=catalogue), description="model",
                                placeholder=f"default: {default_model}" if default_model else "default model",
                                ensure_option=False, style=_LABEL, layout=_ROW)
        self.default: dict[str, w.Checkbox] = {}
        self.link: dict[str, w.ToggleButton] = {}
        for name, (_, label, low, high, step, fmt, shown) in SLIDERS.items():
            slider = w.FloatSlider(value=shown, min=low, max=high, step=step, description=label, readout_format=fmt,
                                   style=_LABEL, layout=w.Layout(width="auto", flex="1 1 auto"),
                                   tooltip=_TIPS.get(name, ""))
            setattr(self, name, slider)
            self.default[name] = w.Checkbox(value=True, description="default", indent=False,
                                            layout=w.Layout(width="72px"),
                                            tooltip="send nothing: %%qwen's default (QwenMagics), else the model's")
        for name, (_, label, high) in NUMBERS.items():
            setattr(self, name, w.BoundedIntText(value=0, min=0, max=high, description=f"{label} (0: default)",
                                                 style={"description_width": "130px"}, layout=_ROW))
        self.seed = w.Text(value="", description="seed", placeholder="random", style=_LABEL, layout=_ROW)
        self.thinking = w.ToggleButtons(options=list(_THINKING), value="default", description="thinking",
                                        style={**_LABEL, "button_width": "64px"})
        self.search = w.Checkbox(value=False, description="web search", indent=False,
                                 tooltip="enable_search: the model may search the web; cited pages are listed")
        self._listeners: list[Callable[[str], None]] = []
        self._quiet = 0
        for name in CONTROLS:
            self.link[name] = w.ToggleButton(value=False, icon="link", tooltip=f"link: {name} moves in every column",
                                             layout=w.Layout(width="32px", min_width="32px", padding="0"))
            self.widget_of(name).observe(lambda change, n=name: self._changed(n, change), "value")
        for name in SLIDERS:
            self.default[name].observe(lambda change, n=name: self._default_changed(n, change.new), "value")
            self._default_changed(name, True)
        self.model.observe(lambda _: self._grey_for_local(), "value")
        self.box = w.VBox([self._row("model"), *(self._row(n) for n in ("temperature", "top_p")),
                           w.Accordion([w.VBox([self._row(n) for n in CONTROLS[3:]])],
                                       titles=("more settings",),
                                       selected_index=None)])

    def widget_of(self, name: str) -> w.DOMWidget:
        return getattr(self, name)

    def _row(self, name: str) -> w.HBox:
        parts = [self.widget_of(name), *([self.default[name]] if name in SLIDERS else []), self.link[name]]
        return w.HBox(parts, layout=w.Layout(width="100%", align_items="center"))

    def on_change(self, listener: Callable[[str], None]) -> None:
        """``listener(name)`` after a control is changed (by a person or by code), not during :meth:`set_state`."""
        self._listeners.append(listener)

    def _changed(self, name: str, change: Any) -> None:
        if name in SLIDERS and abs(change.new - change.old) < 1e-9:
            return  # the front end's rounding of the value to the slider's steps (0.8 → 0.8000000000000002)
        if name in SLIDERS and not self._quiet:
            self.default[name].value = False  # a moved slider is a setting
        if not self._quiet:
            for listener in self._listeners:
                listener(name)

    def _default_changed(self, name: str, unset: bool) -> None:
        self.widget_of(name).readout = not unset  # unset: no number that would not be sent
        if not self._quiet:
            for listener in self._listeners:
                listener(name)

    def _grey_for_local(self) -> None:
        lacks = unsupported_controls(self.model.value)
        for name in LOCAL_LACKS:
            self.widget_of(name).disabled = name in lacks

    # State ------------------------------------------------------------------------------------------

    def state(self, name: str) -> tuple[Any, bool]:
        """A control's value and whether it is unset (sliders' "default" box; False for the others)."""
        return self.widget_of(name).value, name in SLIDERS and self.default[name].value

    def set_state(self, name: str, state: tuple[Any, bool]) -> None:
        """Set a control without telling the listeners (used to copy and to link)."""
        self._quiet += 1
        try:
            self.widget_of(name).value = state[0]
            if name in SLIDERS:
                self.default[name].value = state[1]
                self._default_changed(name, state[1])
        finally:
            self._quiet -= 1

    def copy_from(self, other: "ColumnControls") -> None:
        for name in CONTROLS:
            self.set_state(name, other.state(name))

    def set_from_settings(self, settings: Any, model: str = "") -> None:
        """Start from the ``%%qwen`` configuration: what it leaves unset shows as the default."""
        s = settings
        self.set_state("model", (model or s.model, False))
        for name in SLIDERS:
            value = getattr(s, name)
            self.set_state(name, (SLIDERS[name][6] if value is None else value, value is None))
        for name in NUMBERS:
            self.set_state(name, (getattr(s, name) or 0, False))
        self.set_state("seed", ("" if s.seed is None else str(s.seed), False))
        self.set_state("thinking", (next(k for k, v in _THINKING.items() if v is s.thinking), False))
        self.set_state("search", (bool(s.search), False))

    def set_from_options(self, options: str) -> list[str]:
        """Show a ``%qwen`` option string in the controls; returns the options they do not show (kept as given).

        The string has been checked by the option parser already (its values parse).
        """
        tokens, rest, i = shlex.split(options), [], 0
        while i < len(tokens):
            flag, _, inline = tokens[i].partition("=")
            name = _FLAGS.get(flag)
            if tokens[i] in ("--thinking", "--no-thinking"):
                self.set_state("thinking", ("on" if tokens[i] == "--thinking" else "off", False))
            elif tokens[i] == "--search":
                self.set_state("search", (True, False))
            elif name is not None and (inline or i + 1 < len(tokens)):
                value = inline or tokens[i + 1]
                i += 0 if inline else 1
                if name in SLIDERS:
                    self.set_state(name, (float(value), False))
                elif name in NUMBERS:
                    self.set_state(name, (int(value), False))
                else:
                    self.set_state(name, (value, False))
            else:
                rest.append(tokens[i])
            i += 1
        return rest

    def tokens(self) -> list[str]:
        """The settings as ``%qwen`` options: only what is set, and nothing the chosen model cannot do."""
        lacks, out = unsupported_controls(self.model.value), []
        for name in CONTROLS:
            value, unset = self.state(name)
            if unset or name in lacks:
                continue
            if name == "model" and value.strip():
                out += ["-m", value.strip()]
            elif name in SLIDERS:
                out += [SLIDERS[name][0], f"{value:g}"]
            elif name in NUMBERS and value:
                out += [NUMBERS[name][0], str(value)]
            elif name == "seed" and value.strip():
                out += ["--seed", value.strip()]
            elif name == "thinking" and _THINKING[value] is not None:
                out.append("--thinking" if _THINKING[value] else "--no-thinking")
            elif name == "search" and value:
                out.append("--search")
        return out

    def values(self) -> dict[str, Any]:
        """The settings as ``QwenMagics`` values (None: unset), for "Make these the %%qwen defaults"."""
        tokens = self.tokens()
        out: dict[str, Any] = {"model": self.model.value.strip() or None}
        for name in SLIDERS:
            value, unset = self.state(name)
            out[name] = None if unset else value
        for name in NUMBERS:
            out[name] = self.widget_of(name).value or None
        seed = self.seed.value.strip()
        out["seed"] = int(seed) if seed.lstrip("-").isdigit() else None
        thinks = "--thinking" in tokens or "--no-thinking" in tokens
        out["thinking"] = _THINKING[self.thinking.value] if thinks else None
        out["search"] = "--search" in tokens
        if "--thinking-budget" not in tokens:
            out["thinking_budget"] = None
        return out

