"""A teaching widget: how temperature and top_p reshape the model's next-token choice.

The service returns, for each generated token, only its top K alternatives
from the *raw* distribution (before sampling settings apply).  :func:`reshape`
replays what the sampler does to those K: divide logits by the temperature,
softmax, then cut the nucleus to ``top_p``.  Because the other tokens are
unknown, the result is renormalised over K and is an approximation; the
widget says so under the chart.  Each bar carries two labelled numbers: the
model's own probability (what the token view's hover shows) and that share.
Positions are counted from 1, as on the chart's axis.

Model text is untrusted: every token is HTML-escaped before it reaches a widget.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import ipywidgets as w

from ..display.charts import probability_strip

_NO_LOGPROBS = "This result has no token probabilities: run the cell again with --logprobs 5"
_KEPT_COLOUR = "#4c78a8"
_CUT_TEXT = "#888"
_VISIBLE = str.maketrans({" ": "␣", "\n": "⏎", "\t": "⇥"})


class _Entry(Protocol):
    """One generated token with its top alternatives (see ``qwen_magics.events``)."""

    token: str
    logprob: float
    top: Sequence[tuple[str, float]]


@dataclass(frozen=True)
class Bar:
    """One alternative after reshaping; ``before_cut`` survives the top_p cut so the chart can say what it removed."""

    token: str
    before_cut: float
    probability: float
    """The share at these settings, renormalised over the K alternatives (0 when cut)."""
    kept: bool
    model: float = 0.0
    """The model's own probability of the token (its raw distribution, before temperature and top_p)."""


def reshape(top: Sequence[tuple[str, float]], temperature: float, top_p: float) -> list[Bar]:
    """Renormalise the top alternatives as the sampler would, most probable first.

    ``temperature == 0`` is greedy decoding: the most likely token gets
    everything and top_p has nothing left to cut.
    """
    if not 0 <= temperature < 2:
        raise ValueError(f"temperature must be in [0, 2), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not top:
        return []
    ranked = sorted(top, key=lambda alt: alt[1], reverse=True)
    if temperature == 0:
        return [Bar(tok, float(i == 0), float(i == 0), True, math.exp(lp)) for i, (tok, lp) in enumerate(ranked)]
    peak = ranked[0][1] / temperature  # subtracted so exp() cannot overflow at small T
    weights = [math.exp(lp / temperature - peak) for _, lp in ranked]
    total = sum(weights)
    before = [x / total for x in weights]
    keep, cumulative = 0, 0.0
    while keep < len(before) and cumulative < top_p - 1e-12:  # tolerance: sums of floats fall short of 1
        cumulative += before[keep]
        keep += 1
    kept_total = sum(before[:keep])
    return [
        Bar(tok, p, p / kept_total if i < keep else 0.0, i < keep, math.exp(lp))
        for i, ((tok, lp), p) in enumerate(zip(ranked, before))
    ]


def probs_widget(result: object, position: int | None = None) -> ProbsWidget:
    """Explore one result's token choices; opens at the most uncertain token unless ``position`` is given.

    ``result`` is anything with a ``logprobs`` list (see :class:`_Entry`); ``position`` counts from 1.
    """
    entries = getattr(result, "logprobs", None)
    if not entries:
        raise ValueError(_NO_LOGPROBS)
    if position is None:
        position = 1 + max(range(len(entries)), key=lambda i: _entropy(_alternatives(entries[i])))
    elif not 1 <= position <= len(entries):
        raise ValueError(f"position must be in [1, {len(entries)}] (1 is the first token), got {position}")
    return ProbsWidget(list(entries), position)


class ProbsWidget(w.VBox):
    """The chosen token's probability along the answer (the current position outlined), then sliders for
    position, temperature and top_p over a text label, a bar chart and its caveat."""

    def __init__(self, entries: list[_Entry], position: int) -> None:
        """``position`` counts from 1, as the slider and the chart's axis do."""
        self.entries = entries
        self.strip = w.HTML()
        self.position = _slider(w.IntSlider, value=position, min=1, max=len(entries), description="position")
        self.text = w.HTML()
        self.temperature = _slider(w.FloatSlider, value=1.0, min=0.0, max=1.99, step=0.05, description="temperature")
        self.top_p = _slider(w.FloatSlider, value=1.0, min=0.01, max=1.0, step=0.01, description="top_p")
        self.chart = w.HTML()
        self.caption = w.HTML()
        for slider in (self.position, self.temperature, self.top_p):
            slider.observe(self._redraw, names="value")
        super().__init__([self.strip, self.position, self.text, self.temperature, self.top_p, self.chart, self.caption])
        self._redraw()

    def _redraw(self, change: object = None) -> None:
        index = self.position.value - 1
        entry = self.entries[index]
        alternatives = _alternatives(entry)
        bars = reshape(alternatives, self.temperature.value, self.top_p.value)
        self.strip.value = probability_strip([math.exp(e.logprob) for e in self.entries], marker=index)
        self.text.value = _text_html(self.entries, index)
        self.chart.value = _chart_html(bars, entry.token)
        self.caption.value = (
            '<div style="color:#888;font-size:0.85em;line-height:1.4">share: the chance at these settings, '
            f"renormalised over the top K = {len(alternatives)} alternatives the model returned: "
            "an approximation of the full distribution. model: the model's own probability, before "
            "temperature and top_p (as the token view's hover shows).</div>"
        )


    def _repr_mimebundle_(self, **kwargs: object) -> dict:
        """The live widget, with a static copy of what it shows now beside it (nbconvert, GitHub, a saved file)."""
        bundle = super()._repr_mimebundle_(**kwargs)
        settings = (f"<div>position {self.position.value} · temperature {self.temperature.value:.2f} · "
                    f"top_p {self.top_p.value:.2f}</div>")
        bundle["text/html"] = "".join([self.strip.value, settings, self.text.value, self.chart.value, self.caption.value])
        return bundle


def _slider(kind: type[w.Widget], **settings: object) -> w.Widget:
    """A slider whose label is wide enough for "temperature" and whose track shrinks with the output area."""
    return kind(style={"description_width": "6.5em"}, layout=w.Layout(width="auto", max_width="30em"), **settings)


def _alternatives(entry: _Entry) -> Sequence[tuple[str, float]]:
    """The entry's top K, or the chosen token alone when the service sent none."""
    return entry.top or ((entry.token, entry.logprob),)


def _entropy(top: Sequence[tuple[str, float]]) -> float:
    """Entropy (nats) of the raw top K: high means the model hesitated here."""
    return -sum(b.probability * math.log(b.probability) for b in reshape(top, 1.0, 1.0) if b.probability > 0)


def _show(token: str) -> str:
    """Escaped token with whitespace made visible, since a bare space or newline cannot be read."""
    return html.escape(token.translate(_VISIBLE))


def _text_html(entries: list[_Entry], position: int) -> str:
    """The answer up to ``position``, with that token highlighted."""
    before = html.escape("".join(e.token for e in entries[:position]))
    mark = f'<mark style="background:#ffe08a">{_show(entries[position].token)}</mark>'
    style = "white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.5;font-family:monospace"
    return f'<div style="{style}">{before}{mark}</div>'


def _chart_html(bars: list[Bar], chosen: str) -> str:
    """Horizontal bars in plain HTML/CSS: the kept ones share 100%; a cut one has an empty bar and its
    pre-cut probability, labelled as such, so no figure of the old distribution reads as part of the new."""
    rows = []
    for bar in bars:
        share = f"share {bar.probability:.1%}" if bar.kept else f"cut by top_p (was {bar.before_cut:.1%})"
        label = f"{share} · model {bar.model:.1%}"
        note = " ◀ generated" if bar.token == chosen else ""
        rows.append(
            '<div style="display:flex;align-items:center;gap:6px;margin:2px 0">'
            f'<code title="{_show(bar.token)}" style="flex:0 1 10em;min-width:2em;overflow:hidden;'
            f'text-overflow:ellipsis;white-space:nowrap;text-align:right">{_show(bar.token)}</code>'
            '<div style="flex:1 1 6em;min-width:2em;background:#f3f3f3">'
            f'<div style="width:{bar.probability * 100:.1f}%;background:{_KEPT_COLOUR};height:1em"></div></div>'
            f'<span style="flex:0 1 19em;color:{"#000" if bar.kept else _CUT_TEXT}">{label}{note}</span></div>'
        )
    return "".join(rows)
