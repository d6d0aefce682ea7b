"""Small static charts as inline SVG: no script, no dependency, every label escaped.

They sit in notebook outputs and in static exports, so they must read the
same in a light and a dark theme: text and axes are ``currentColor`` (the
surrounding text colour), grid lines a translucent grey, and bars two
mid-tone colours that keep their contrast on white and on near-black.
Labels may come from the user or the model: they are escaped and shortened,
never markup.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

BLUE = "#4c78a8"
ORANGE = "#f58518"
RED = "#e45756"
_GRID = 'stroke="#888" stroke-opacity="0.35"'
_FONT = 'font-family="sans-serif" font-size="11" fill="currentColor"'
_LABEL_CHARS = 34


@dataclass(frozen=True)
class Series:
    """One measure drawn for every row; ``values`` lie in [0, 1], None where the measure does not apply."""

    name: str
    colour: str
    values: Sequence[float | None]
    missing: str = "n/a"
    """Said in place of the bar where a value is None."""


def bar_rows(labels: Sequence[str], series: Sequence[Series], *, title: str, axis: str) -> str:
    """Horizontal bars in [0, 1]: a row per label, one thin bar per series, a legend and a labelled 0-1 axis.

    Rows suit long labels (option strings), which a vertical chart would have to tilt.
    """
    left, right, bar, gap, top = 210, 470, 9, 8, 34
    row = bar * len(series) + gap
    height = top + row * len(labels) + 32
    width = right + 60
    out = [_open(width, height, title), _text(0, 13, title, weight="bold")]
    for i, s in enumerate(series):  # legend
        x = left + i * 130
        out.append(f'<rect x="{x}" y="19" width="10" height="9" fill="{s.colour}"/>' + _text(x + 14, 27, s.name))
    bottom = top + row * len(labels)
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x = left + tick * (right - left)
        out.append(f'<line x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{bottom}" {_GRID}/>'
                   + _text(x, bottom + 12, f"{tick:g}", anchor="middle"))
    out.append(_text((left + right) / 2, bottom + 26, axis, anchor="middle"))
    out.append(_text(left - 6, top - 6, "setting", anchor="end", weight="bold"))
    out.append('<g class="bars">')
    for r, label in enumerate(labels):
        y = top + r * row
        out.append(_text(left - 6, y + row / 2 + 1, _short(label), anchor="end", title=label))
        for i, s in enumerate(series):
            value = s.values[r]
            if value is None:
                out.append(_text(left + 3, y + (i + 1) * bar - 1, s.missing, size=9, opacity=0.7))
                continue
            w = max(0.0, min(1.0, value)) * (right - left)
            out.append(f'<rect x="{left}" y="{y + i * bar}" width="{w:.1f}" height="{bar - 1}" fill="{s.colour}">'
                       f"<title>{html.escape(f'{label}: {s.name} {value:.2f}')}</title></rect>"
                       + _text(left + w + 4, y + (i + 1) * bar - 1, f"{value:.2f}", size=9))
    out.append("</g></svg>")
    return "".join(out)


def probability_strip(probabilities: Sequence[float], *, marker: int | None = None, columns: int = 160) -> str:
    """The probability of each chosen token along the answer, one bar per token, so dips show where it hesitated.

    Longer answers are cut into at most ``columns`` equal runs of tokens, each
    drawn at its lowest probability (a dip must not be averaged away); the
    caption says how many tokens a bar stands for.  ``marker`` outlines the
    bar holding that token position.  Bars under 50% are drawn in a warning
    colour.
    """
    n = len(probabilities)
    per = max(1, math.ceil(n / columns))
    lows = [min(probabilities[i:i + per]) for i in range(0, n, per)]
    left, plot_h, top = 46, 60, 6
    step = max(3, min(12, 480 // max(len(lows), 1)))  # a short answer gets wider bars, a long one 3 px
    width = left + max(len(lows), 1) * step + 8
    bottom = top + plot_h
    what = "each token" if per == 1 else f"the lowest of every {per} tokens"
    title = f"Probability of the chosen token along the answer ({n} tokens; a bar is {what})"
    out = [_open(max(width, 320), bottom + 30, title)]
    for tick in (0, 0.5, 1):
        y = bottom - tick * plot_h
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 4}" y2="{y:.1f}" {_GRID}/>'
                   + _text(left - 4, y + 4, f"{tick:.0%}", anchor="end", size=9))
    out.append(_text(6, top + plot_h / 2 + 4, "p", anchor="middle", weight="bold"))
    out.append(f'<g class="bars" fill="{BLUE}">')
    for i, p in enumerate(lows):
        h = round(max(0.0, min(1.0, p)) * plot_h)  # whole pixels: a long answer draws hundreds of bars
        warn = "" if p >= 0.5 else f' fill="{RED}"'
        out.append(f'<rect x="{left + i * step}" y="{bottom - h}" width="{step - 1}" height="{h}"{warn}/>')
    out.append("</g>")
    if marker is not None and 0 <= marker < n:
        x = left + marker // per * step
        out.append(f'<rect class="marker" x="{x - 1}" y="{top}" width="{step + 1}" height="{plot_h}" fill="none" '
                   'stroke="currentColor" stroke-width="1"/>')
    out.append(_text(left, bottom + 14, "1", size=9)
               + _text(width - 4, bottom + 14, str(n), anchor="end", size=9)
               + _text(left, bottom + 26, f"token position ({what})", anchor="start", size=10))
    out.append("</svg>")
    return "".join(out)


def entropy_strip(bits: Sequence[float], *, approximate: bool = False, columns: int = 160) -> str:
    """The entropy (bits) of the next-token distribution at each position of an answer: peaks show where the
    model weighed many tokens.

    Longer answers are cut into at most ``columns`` equal runs, each drawn at
    its highest entropy (a peak must not be averaged away).  ``approximate``
    says the values come from the top K alternatives only, not the vocabulary.
    """
    n = len(bits)
    per = max(1, math.ceil(n / columns))
    highs = [max(bits[i:i + per]) for i in range(0, n, per)]
    scale = max(1.0, math.ceil(max(highs, default=0.0)))
    left, plot_h, top = 46, 60, 6
    step = max(3, min(12, 480 // max(len(highs), 1)))
    width = left + max(len(highs), 1) * step + 8
    bottom = top + plot_h
    what = "each token" if per == 1 else f"the highest of every {per} tokens"
    over = "the top K alternatives only: an approximation" if approximate else "the whole vocabulary"
    title = f"Entropy of the next-token distribution along the answer, in bits, over {over} ({n} tokens; a bar is {what})"
    out = [_open(max(width, 320), bottom + 30, title)]
    for tick in (0, scale / 2, scale):
        y = bottom - tick / scale * plot_h
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 4}" y2="{y:.1f}" {_GRID}/>'
                   + _text(left - 4, y + 4, f"{tick:g}", anchor="end", size=9))
    out.append(_text(6, top + plot_h / 2 + 4, "H", anchor="middle", weight="bold"))
    out.append(f'<g class="bars" fill="{ORANGE}">')
    for i, h_bits in enumerate(highs):
        h = round(max(0.0, min(1.0, h_bits / scale)) * plot_h)
        out.append(f'<rect x="{left + i * step}" y="{bottom - h}" width="{step - 1}" height="{h}"/>')
    out.append("</g>")
    caption = "bits (top K only: an approximation)" if approximate else "bits over the whole vocabulary"
    out.append(_text(left, bottom + 14, "1", size=9)
               + _text(width - 4, bottom + 14, str(n), anchor="end", size=9)
               + _text(left, bottom + 26, f"token position ({what}); {caption}", anchor="start", size=10))
    out.append("</svg>")
    return "".join(out)


def _open(width: float, height: float, title: str) -> str:
    """The root element: fixed size (it never stretches over the output), titled for screen readers."""
    label = html.escape(title, quote=True)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{label}" '
            f'style="max-width:100%;height:auto;display:block;margin:4px 0"><title>{html.escape(title)}</title>')


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int | None = None,
          weight: str | None = None, opacity: float | None = None, title: str | None = None) -> str:
    font = _FONT if size is None else _FONT.replace('font-size="11"', f'font-size="{size}"')
    extra = (f' font-weight="{weight}"' if weight else "") + (f' opacity="{opacity}"' if opacity else "")
    tip = f"<title>{html.escape(title)}</title>" if title and title != text else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {font}{extra}>{html.escape(text)}{tip}</text>'


def _short(label: str) -> str:
    """One line of at most ``_LABEL_CHARS`` characters: a long option string keeps its start."""
    flat = " ".join(label.split())
    return flat if len(flat) <= _LABEL_CHARS else flat[:_LABEL_CHARS - 1] + "…"


def interval_rows(labels: Sequence[str], means: Sequence[float | None], lows: Sequence[float | None],
                  highs: Sequence[float | None], *, title: str, axis: str) -> str:
    """A score in [0, 1] per row label, as a bar with its interval drawn over it (a line from low to high).

    A row with no score says "no score" in place of the bar.
    """
    left, right, bar, gap, top = 210, 470, 12, 10, 26
    row = bar + gap
    bottom = top + row * len(labels)
    out = [_open(right + 70, bottom + 32, title), _text(0, 13, title, weight="bold")]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x = left + tick * (right - left)
        out.append(f'<line x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{bottom}" {_GRID}/>'
                   + _text(x, bottom + 12, f"{tick:g}", anchor="middle"))
    out.append(_text((left + right) / 2, bottom + 26, axis, anchor="middle"))
    out.append('<g class="bars">')
    span = right - left
    for r, label in enumerate(labels):
        y = top + r * row
        out.append(_text(left - 6, y + bar - 2, _short(label), anchor="end", title=label))
        mean, low, high = means[r], lows[r], highs[r]
        if mean is None:
            out.append(_text(left + 3, y + bar - 2, "no score", size=9, opacity=0.7))
            continue
        w = max(0.0, min(1.0, mean)) * span
        tip = html.escape(f"{label}: {mean:.2f}" + (f" (95% interval {low:.2f} to {high:.2f})" if low is not None
                                                     else ""))
        out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{BLUE}" fill-opacity="0.55">'
                   f"<title>{tip}</title></rect>")
        if low is not None and high is not None:
            x1, x2, mid = left + max(0.0, low) * span, left + min(1.0, high) * span, y + bar / 2
            out.append(f'<g class="interval" stroke="currentColor" stroke-width="1.5">'
                       f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}"/>'
                       f'<line x1="{x1:.1f}" y1="{y + 2}" x2="{x1:.1f}" y2="{y + bar - 2}"/>'
                       f'<line x1="{x2:.1f}" y1="{y + 2}" x2="{x2:.1f}" y2="{y + bar - 2}"/></g>')
        out.append(_text(right + 6, y + bar - 2, f"{mean:.2f}", size=10))
    out.append("</g></svg>")
    return "".join(out)
