"""The numbers under a side-by-side comparison: how far apart the columns' answers are.

Each column is one run (a model or a sampling setting); columns that share a
group label are repeats of one setting, so their spread shows what temperature
and top_p do: at temperature 0 the repeats usually come out identical; as it rises
they drift apart (lower similarity, higher distinct-n).

Words are ``re.findall(r"\\S+", text)``: runs of non-space characters, with
punctuation left attached ("cat." and "cat" are different words), and case kept.
Chinese and Japanese put no spaces between words, so a run holding Han, kana or
full-width punctuation is split further into Qwen's token pieces, which for
these scripts are mostly whole words (今天|天气|很好|，|我们 ...): a one-word
change then costs one word, not the sentence.  This is the unit of every count,
similarity and diff here.

Cost: ``SequenceMatcher`` without autojunk does work that grows with the square
of the text when common words ("the", "|" in tables) repeat, and a matrix of 16
columns runs it 120 times.  Similarity therefore compares only the first
``SIMILARITY_WORDS`` words of each answer (about 6 kB of prose, a whole typical
answer).  With it, 16 columns of 20 kB answers take about half a second for
prose and two to three seconds for table-heavy text.  Lengths, word counts,
distinct-n and diffs always use the whole text.

Model text is untrusted: everything that reaches HTML is escaped.
"""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass
from itertools import combinations
from statistics import fmean
from typing import Hashable, Sequence

from .charts import BLUE, ORANGE, Series, bar_rows

SIMILARITY_WORDS = 1_000
_INS = '<ins style="background:#d4f7d4;text-decoration:none">'
_DEL = '<del style="background:#fbd5d5">'
_CELL = "padding:2px 8px;border:1px solid #ddd"
_NONE = "—"


@dataclass(frozen=True)
class GroupSpread:
    """How much the repeats of one setting differ; ``mean_similarity`` is None for a single run."""

    label: str
    runs: int
    mean_similarity: float | None
    distinct_1: float
    distinct_2: float
    identical: bool


@dataclass(frozen=True)
class Summary:
    """Per-column sizes, pairwise similarities (column order) and one spread per group of repeats."""

    lengths: list[int]
    words: list[int]
    similarity: list[list[float]]
    to_first: list[float]
    groups: list[GroupSpread]


def summarize(texts: Sequence[str], groups: Sequence[str] | None = None) -> Summary:
    """Summarise the answers of a comparison, one text per column.

    ``groups[i]`` labels column i's setting; columns with the same label are
    repeats.  Without ``groups`` every column is its own group, labelled by
    its 1-based position.
    """
    if groups is None:
        groups = [f"column {i + 1}" for i in range(len(texts))]
    elif len(groups) != len(texts):
        raise ValueError(f"groups has {len(groups)} labels for {len(texts)} texts")
    words = [_words(text) for text in texts]
    capped = [w[:SIMILARITY_WORDS] for w in words]
    matrix = [[1.0] * len(texts) for _ in texts]
    for i, j in combinations(range(len(texts)), 2):
        matrix[i][j] = matrix[j][i] = _ratio(capped[i], capped[j])
    members: dict[str, list[int]] = {}
    for column, label in enumerate(groups):
        members.setdefault(label, []).append(column)
    return Summary(
        lengths=[len(text) for text in texts],
        words=[len(w) for w in words],
        similarity=matrix,
        to_first=list(matrix[0]) if texts else [],
        groups=[_spread(label, cols, texts, words, matrix) for label, cols in members.items()],
    )


def similarity(a: str, b: str) -> float:
    """Word-level ``SequenceMatcher`` ratio of two answers (first ``SIMILARITY_WORDS`` words each).

    1.0 for equal word sequences (including two empty texts), 0.0 when no word
    matches.  Whitespace differences alone do not count.
    """
    return _ratio(_words(a)[:SIMILARITY_WORDS], _words(b)[:SIMILARITY_WORDS])


def diff_html(base: str, other: str) -> str:
    """``other`` as escaped HTML, with words it adds in ``<ins>`` and words of ``base`` it lacks in ``<del>``.

    The whole of both texts is compared (a diff that stopped early would
    mislabel the rest).  Whitespace is ``other``'s own, so newlines survive:
    place the result inside a ``white-space:pre-wrap`` container.
    """
    lead, theirs = _spaced_words(other)
    _, ours = _spaced_words(base)
    out = [lead] if lead else []
    matcher = difflib.SequenceMatcher(None, [w for w, _ in ours], [w for w, _ in theirs], autojunk=False)
    for op, b_lo, b_hi, o_lo, o_hi in matcher.get_opcodes():
        if op in ("delete", "replace"):
            _emit(out, ours[b_lo:b_hi], _DEL, "</del>", keep_trailing_space=False)
        if op in ("insert", "replace"):
            _emit(out, theirs[o_lo:o_hi], _INS, "</ins>", keep_trailing_space=True)
        if op == "equal":
            _emit(out, theirs[o_lo:o_hi], "", "", keep_trailing_space=True)
    return "".join(out)


def summary_markdown(summary: Summary, labels: Sequence[str]) -> str:
    """GitHub-markdown table per column, then per group of repeats when some setting ran twice or more.

    The diversity chart follows as a raw HTML block (a ``<div>`` line), which
    Jupyter, nbconvert and VS Code render; a renderer that refuses raw HTML
    must take the chart from :func:`summary_html` instead.
    """
    tables = [_markdown_table(header, rows) for header, rows in _tables(summary, labels)]
    chart = diversity_chart(summary)
    return "\n\n".join(tables + ([f"<div>{chart}</div>"] if chart else []))


def summary_html(summary: Summary, labels: Sequence[str]) -> str:
    """The tables of :func:`summary_markdown` as compact, escaped HTML for the widget's summary row, then the chart."""
    return "".join(_html_table(header, rows) for header, rows in _tables(summary, labels)) + diversity_chart(summary)


def diversity_chart(summary: Summary) -> str:
    """Distinct-2 and mean pairwise similarity per setting as an SVG bar chart; empty for a single setting run once.

    Side by side the settings show what sampling does: as temperature or top_p
    rises, the blue bars (distinct-2) lengthen and the orange ones (similarity
    of the repeats) shorten.
    """
    groups = summary.groups
    if len(groups) < 2 and not any(g.runs >= 2 for g in groups):
        return ""
    return bar_rows([g.label for g in groups], [
        Series("distinct-2", BLUE, [g.distinct_2 for g in groups]),
        Series("mean similarity of repeats", ORANGE, [g.mean_similarity for g in groups], missing="single run"),
    ], title="Diversity per setting: longer blue, shorter orange = more varied answers",
        axis="share of distinct word pairs / word-level similarity (0 to 1)")


_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
"""Han, kana, CJK and full-width punctuation: the scripts written without spaces between words."""


def _words(text: str) -> list[str]:
    return [piece for word in re.findall(r"\S+", text) for piece in _segment(word)]


def _segment(word: str) -> list[str]:
    """A space-delimited word, split into Qwen's token pieces where it holds CJK text (else itself)."""
    if not _CJK.search(word):
        return [word]
    from ..tokens.qwen import tokenize

    return tokenize(word)


def _ratio(a: list[str], b: list[str]) -> float:
    """``SequenceMatcher.ratio`` made symmetric: it can differ with argument order, so order them first."""
    if a == b:
        return 1.0
    first, second = sorted((a, b))
    return difflib.SequenceMatcher(None, first, second, autojunk=False).ratio()


def _spread(
    label: str, columns: list[int], texts: Sequence[str], words: list[list[str]], matrix: list[list[float]]
) -> GroupSpread:
    """Spread of one group; distinct-n pools the runs, counting bigrams within each answer only.

    A single run is never ``identical``: there is nothing to compare it with.
    """
    pairs = [matrix[i][j] for i, j in combinations(columns, 2)]
    unigrams = [w for c in columns for w in words[c]]
    bigrams = [pair for c in columns for pair in zip(words[c], words[c][1:])]
    return GroupSpread(
        label=label,
        runs=len(columns),
        mean_similarity=fmean(pairs) if pairs else None,
        distinct_1=_distinct(unigrams),
        distinct_2=_distinct(bigrams),
        identical=len(columns) > 1 and len({texts[c] for c in columns}) == 1,
    )


def _distinct(items: Sequence[Hashable]) -> float:
    """Share of items that are unique; 0.0 when there are none."""
    return len(set(items)) / len(items) if items else 0.0


def _spaced_words(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Leading whitespace, then each word (CJK text segmented, as :func:`_words`) with the whitespace that
    follows it."""
    spaced = []
    for word, space in re.findall(r"(\S+)(\s*)", text):
        pieces = _segment(word)
        spaced += [(piece, "") for piece in pieces[:-1]] + [(pieces[-1], space)]
    return text[: len(text) - len(text.lstrip())], spaced


def _emit(
    out: list[str], run: list[tuple[str, str]], open_tag: str, close_tag: str, keep_trailing_space: bool
) -> None:
    """Append a run of words inside a tag; its trailing whitespace goes outside, so marks hug the words.

    A deleted run drops its trailing whitespace (it is not in ``other``), so a
    space is added before the next run when words would otherwise touch.
    """
    if not run:
        return
    before = re.sub(r"<[^>]*>", "", out[-1])[-1:] if out else ""
    if out and not out[-1][-1].isspace() and not (_CJK.match(before) or _CJK.match(run[0][0][0])):
        out.append(" ")  # CJK text is written without spaces: none is added next to it
    inner = "".join(html.escape(word) + space for word, space in run[:-1]) + html.escape(run[-1][0])
    out.append(f"{open_tag}{inner}{close_tag}")
    if keep_trailing_space and run[-1][1]:
        out.append(run[-1][1])


def _tables(summary: Summary, labels: Sequence[str]) -> list[tuple[list[str], list[list[str]]]]:
    """Header and rows of plain-text cells, shared by the markdown and HTML renderings."""
    if len(labels) != len(summary.lengths):
        raise ValueError(f"{len(labels)} labels for {len(summary.lengths)} columns")
    columns = [
        [label, str(chars), str(words), f"{to_first:.0%}"]
        for label, chars, words, to_first in zip(labels, summary.lengths, summary.words, summary.to_first)
    ]
    tables = [(["column", "characters", "words", "similarity to first"], columns)]
    if any(group.runs >= 2 for group in summary.groups):
        spreads = [
            [
                g.label,
                str(g.runs),
                _NONE if g.mean_similarity is None else f"{g.mean_similarity:.0%}",
                f"{g.distinct_1:.2f}",
                f"{g.distinct_2:.2f}",
                _NONE if g.runs < 2 else ("yes" if g.identical else "no"),
            ]
            for g in summary.groups
        ]
        header = ["setting", "runs", "mean similarity", "distinct-1", "distinct-2", "identical"]
        tables.append((header, spreads))
    return tables


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(" ".join(c.split()).replace("|", "\\|") for c in cells) + " |"

    align = "| --- |" + " ---: |" * (len(header) - 1)
    return "\n".join([line(header), align, *map(line, rows)])


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str], tag: str) -> str:
        aligned = [("left" if i == 0 else "right", c) for i, c in enumerate(cells)]
        return "<tr>" + "".join(
            f'<{tag} style="{_CELL};text-align:{a}">{html.escape(c)}</{tag}>' for a, c in aligned
        ) + "</tr>"

    body = "".join(line(row, "td") for row in rows)
    return (
        '<table style="border-collapse:collapse;font-size:0.85em;margin:4px 0">'
        f"<thead>{line(header, 'th')}</thead><tbody>{body}</tbody></table>"
    )
