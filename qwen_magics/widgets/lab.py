"""The sampling lab's widget: the next-token distribution as bars, the sampler's stages, and buttons that step.

Every slider re-shapes the lab's cached logits in numpy (no model call); the
buttons that move (a bar, Sample, Greedy, Back, Run to end) call the model
once per token.  Run to end steps in a worker thread so the Stop button is
heard.  Model text is untrusted: every piece is HTML-escaped, and the widget
saves a static copy of what it shows for notebooks opened without a kernel.
"""

from __future__ import annotations

import html
import math
import threading
from typing import Any, Callable

import ipywidgets as w
import numpy as np

from ..display.charts import BLUE, ORANGE, Series, bar_rows
from ..errors import InvalidInput, QwenMagicsError
from ..sampling.lab import Lab

BARS = 12
RUN_TOKENS = 200
_VISIBLE = str.maketrans({" ": "␣", "\n": "⏎", "\t": "⇥"})
_MONO = "font-family:monospace;white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.6"


class LabWidget(w.VBox):
    """Bars of the likeliest next tokens (click one to take it), the sliders, the stages and the text so far."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        s = lab.settings
        self.summary = w.HTML()
        self.text_view = w.HTML()
        self.sliders = {
            "temperature": _slider(w.FloatSlider, s.temperature, 0.0, 2.0, 0.05),
            "top_k": _slider(w.IntSlider, s.top_k, 0, 100, 1),
            "top_p": _slider(w.FloatSlider, s.top_p, 0.01, 1.0, 0.01),
            "min_p": _slider(w.FloatSlider, s.min_p, 0.0, 1.0, 0.01),
            "repetition": _slider(w.FloatSlider, s.repetition, 0.5, 2.0, 0.05),
            "presence": _slider(w.FloatSlider, s.presence, -2.0, 2.0, 0.1),
        }
        for name, slider in self.sliders.items():
            slider.description = name
            slider.observe(self._reshape, names="value")
        self.bar_buttons = [w.Button(layout=w.Layout(width="11em"), tooltip="take this token") for _ in range(BARS)]
        self.bar_values = [w.HTML(layout=w.Layout(flex="1 1 auto")) for _ in range(BARS)]
        for i, button in enumerate(self.bar_buttons):
            button.add_class("qwen-lab-take")
            button.on_click(lambda _, i=i: self._act(lambda: self.lab.step(self._shown[i])))
        rows = [w.HBox([b, v], layout=w.Layout(align_items="center")) for b, v in zip(self.bar_buttons, self.bar_values)]
        self.stages_view = w.HTML()
        self.sample_button = w.Button(description="Sample", tooltip="draw one token with the settings (seeded)")
        self.greedy_button = w.Button(description="Greedy", tooltip="take the most likely token")
        self.back_button = w.Button(description="Back", tooltip="undo the last token")
        self.draw_button = w.Button(description="Sample 100", tooltip="draw 100 tokens here, none taken")
        self.run_button = w.Button(description="Run to end", tooltip=f"step with the settings (at most {RUN_TOKENS})")
        self.stop_button = w.Button(description="Stop", disabled=True)
        self.sample_button.on_click(lambda _: self._act(self.lab.step))
        self.greedy_button.on_click(lambda _: self._act(self.lab.greedy))
        self.back_button.on_click(lambda _: self._act(self.lab.back))
        self.draw_button.on_click(lambda _: self._sample_100())
        self.run_button.on_click(lambda _: self._start_run())
        self.stop_button.on_click(lambda _: self._stopping.set())
        self.counts = w.HTML()
        self.status = w.HTML()
        self._shown: list[int] = []
        self._stopping = threading.Event()
        self._syncing = False
        self._worker: threading.Thread | None = None
        buttons = w.HBox([self.sample_button, self.greedy_button, self.back_button, self.draw_button,
                          self.run_button, self.stop_button], layout=w.Layout(flex_flow="row wrap"))
        controls = w.VBox(list(self.sliders.values()))
        super().__init__([self.summary, self.text_view, buttons, w.HBox([w.VBox(rows), controls],
                                                                   layout=w.Layout(flex_flow="row wrap")),
                          self.stages_view, self.counts, self.status])
        self.add_class("qwen-lab")
        self.redraw()

    # --- the lab's API, redrawing after each change --------------------------------------------------
    def distribution(self, shaped: bool = True) -> list[tuple[str, float]]:
        """``(piece, probability)`` of every token with probability > 0, most likely first (see :class:`Lab`)."""
        return self.lab.distribution(shaped)

    def entropy(self, shaped: bool = True) -> float:
        """Entropy in bits of the settings' (``shaped=False``: the model's) next-token distribution."""
        return self.lab.entropy(shaped)

    def choices(self, shaped: bool = True) -> float:
        """2 ** entropy: the effective number of choices."""
        return self.lab.choices(shaped)

    def set(self, **settings: Any) -> LabWidget:
        """Change settings (None switches a stage off); the sliders follow."""
        self.lab.set(**settings)
        self._syncing = True
        try:
            for name, slider in self.sliders.items():
                slider.value = getattr(self.lab.settings, name)
        finally:
            self._syncing = False
        self.redraw()
        return self

    def step(self, token: int | str | None = None) -> str:
        """Take ``token`` (piece or id) or draw one with the settings; returns its piece."""
        self._idle()
        piece = self.lab.step(token)
        self.redraw()
        return piece

    def greedy(self) -> str:
        """Take the most likely token."""
        self._idle()
        piece = self.lab.greedy()
        self.redraw()
        return piece

    def back(self) -> str:
        """Undo the last token; returns its piece."""
        self._idle()
        piece = self.lab.back()
        self.redraw()
        return piece

    def draw(self, n: int, seed: int | None = 0) -> dict[str, int]:
        """Draw ``n`` tokens here with the settings (none taken): piece -> count."""
        return self.lab.draw(n, seed)

    @property
    def text(self) -> str:
        """The text taken after the prompt."""
        return self.lab.text

    @property
    def tokens(self) -> list[str]:
        """The pieces taken, in order."""
        return self.lab.tokens

    @property
    def stages(self) -> tuple:
        """The sampler's stages in llama.cpp's order, with what each kept and removed."""
        return self.lab.stages

    # --- drawing ---------------------------------------------------------------------------------
    def redraw(self) -> None:
        """Everything from the lab as it is (numpy on the cached logits; no model call)."""
        lab = self.lab
        result = lab.shaped()
        self.summary.value = _summary_html(lab)
        self.text_view.value = _text_html(lab)
        self.stages_view.value = _stages_html(lab)
        top = lab.top(BARS, shaped=False)
        self._shown = [i for i, _ in top]
        for button, value, (i, p) in zip(self.bar_buttons, self.bar_values, top):
            button.description = lab.piece(i).translate(_VISIBLE) or "∅"
            button.disabled = lab.ended
            value.value = _bar_html(float(result.probs[i]), p, _cut_by(lab, i))
        ended = lab.ended
        for button in (self.sample_button, self.greedy_button, self.draw_button, self.run_button):
            button.disabled = ended or self._running
        self.back_button.disabled = not lab.taken or self._running

    def _idle(self) -> None:
        if self._running:
            raise InvalidInput("The lab is running to the end", "Press Stop first, or wait for it to end")

    @property
    def _running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _reshape(self, change: Any = None) -> None:
        if self._syncing:
            return
        values = {name: slider.value for name, slider in self.sliders.items()}
        try:
            self.lab.set(**values)
        except QwenMagicsError as exc:
            self.status.value = _error(exc)
            return
        self.counts.value = ""
        self.status.value = ""
        self.redraw()

    def _act(self, action: Callable[[], Any]) -> None:
        if self._running:
            return
        try:
            action()
        except QwenMagicsError as exc:
            self.status.value = _error(exc)
        else:
            self.status.value = ""
        self.counts.value = ""
        self.redraw()

    def _sample_100(self) -> None:
        lab = self.lab
        ids = lab.draw_ids(100, seed=None)
        observed = dict(zip(*np.unique(ids, return_counts=True)))
        probs = lab.probabilities()
        shown = sorted(set(observed) | {i for i, _ in lab.top(8)}, key=lambda i: -probs[i])[:15]
        self.counts.value = bar_rows(
            [lab.piece(int(i)).translate(_VISIBLE) for i in shown],
            [Series("computed", BLUE, [float(probs[i]) for i in shown]),
             Series("observed in 100", ORANGE, [observed.get(i, 0) / 100 for i in shown])],
            title="Sample 100: observed share beside computed probability", axis="share of draws")

    def _start_run(self) -> None:
        if self._running or self.lab.ended:
            return
        self._stopping.clear()
        self._worker = threading.Thread(target=self._run, name="qwen-lab-run", daemon=True)
        self._worker.start()
        self.stop_button.disabled = False
        self.redraw()

    def _run(self) -> None:
        try:
            for _ in self.lab.run(RUN_TOKENS):
                self.text_view.value = _text_html(self.lab)
                if self._stopping.is_set():
                    break
        except QwenMagicsError as exc:
            self.status.value = _error(exc)
        finally:
            self._worker = None
            self.stop_button.disabled = True
            self.redraw()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        """The live widget, with a static copy of what it shows now (nbconvert, GitHub, a saved file)."""
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/html"] = static_html(self.lab)
        return bundle


def static_html(lab: Lab) -> str:
    """What the widget shows, as plain HTML: summary, text, settings, bars, stages."""
    result = lab.shaped()
    settings = " · ".join(f"{name} {getattr(lab.settings, name):g}" for name in
                          ("temperature", "top_k", "top_p", "min_p", "repetition", "presence"))
    bars = "".join(
        f'<div style="display:flex;gap:6px;align-items:center"><code style="flex:0 0 11em;text-align:right;'
        f'overflow:hidden">{_show(lab.piece(i))}</code>{_bar_html(float(result.probs[i]), p, _cut_by(lab, i))}</div>'
        for i, p in lab.top(BARS, shaped=False))
    return "".join([_summary_html(lab), _text_html(lab), f"<div>{settings}</div>", bars, _stages_html(lab)])


def _slider(kind: type[w.Widget], value: float, low: float, high: float, step: float) -> w.Widget:
    return kind(value=value, min=low, max=high, step=step, continuous_update=False,
                style={"description_width": "6.5em"}, layout=w.Layout(width="auto", max_width="26em"))


def _show(piece: str) -> str:
    return html.escape(piece.translate(_VISIBLE)) or "∅"


def _error(exc: QwenMagicsError) -> str:
    return f'<div style="color:#c62828">{html.escape(exc.line() if hasattr(exc, "line") else str(exc))}</div>'


def _summary_html(lab: Lab) -> str:
    taken = lab.taken[-1] if lab.taken else None
    last = (f" · last token {_show(taken.piece)} was rank {taken.rank} ({taken.probability:.1%}, {taken.how})"
            if taken else "")
    ended = " · the text has ended" if lab.ended else ""
    return (f"<div><b>Next token</b>: entropy {lab.entropy(shaped=False):.2f} bits "
            f"(≈ {lab.choices(shaped=False):.1f} choices) for the model; {lab.entropy():.2f} bits "
            f"(≈ {lab.choices():.1f}) after the settings · {len(lab.taken)} tokens taken{last}{ended} · "
            f'<span class="qwen-lab-calls">{lab.calls} model calls</span></div>')


def _text_html(lab: Lab) -> str:
    """The prompt in grey, then each taken token tinted by the model's probability of it when taken."""
    spans = []
    for t in lab.taken:
        hue = 120 * t.probability  # red (unlikely) to green (likely)
        tip = f"p {t.probability:.3f} · after settings {t.shaped:.3f} · rank {t.rank} · {t.how}"
        spans.append(f'<span title="{html.escape(tip)}" style="background:hsla({hue:.0f},70%,50%,0.35)">'
                     f"{html.escape(t.piece)}</span>")
    prompt = f'<span style="color:#888">{html.escape(lab.prompt)}</span>'
    return f'<div class="qwen-lab-text" style="{_MONO}">{prompt}{"".join(spans)}</div>'


def _bar_html(shaped: float, model: float, cut: str | None) -> str:
    logprob = math.log(model) if model > 0 else float("-inf")
    label = (f"{shaped:.1%}" if cut is None else f"cut by {cut}") + f" · model {model:.1%} · logprob {logprob:.2f}"
    return ('<div style="display:flex;align-items:center;gap:6px;width:100%">'
            '<div style="flex:1 1 8em;min-width:4em;background:#8882;position:relative;height:1em">'
            f'<div style="position:absolute;height:1em;width:{model * 100:.1f}%;background:#8886"></div>'
            f'<div class="qwen-lab-bar" style="position:absolute;height:1em;width:{shaped * 100:.1f}%;'
            f'background:{BLUE}"></div></div><span style="flex:0 1 22em">{label}</span></div>')


def _stages_html(lab: Lab) -> str:
    rows = []
    for i, stage in enumerate(lab.stages, 1):
        effect = (f"removed {stage.removed:.1%}" if stage.removed else
                  f"moved {stage.moved:.1%}" if stage.moved else "no change")
        style = "" if stage.active else ' style="color:#888"'
        rows.append(f"<li{style}><b>{stage.name}</b> {html.escape(stage.setting)}: {stage.kept:,} kept, {effect}</li>")
    return ('<div><b>The sampler\'s stages, in llama.cpp\'s order</b> (removed: share of the model\'s '
            f'probability)<ol style="margin:2px 0">{"".join(rows)}</ol></div>')


def _cut_by(lab: Lab, token: int) -> str | None:
    """The first stage that removed ``token`` (None when it is still a candidate)."""
    return lab.shaped().cut_by(token)
