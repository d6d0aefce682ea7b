"""``{expr}`` expansion: prompts built from Python values.

Like IPython's own variable expansion (names, attributes, subscripts,
``In[n]``/``Out[n]``), but strict: a name that does not resolve is an error that
names it, raised before any request, instead of being left in the prompt
silently.  ``{{`` and ``}}`` stay literal braces.  Values are bounded: a
DataFrame becomes a markdown table of its first rows, and any text over the
limit is cut with a warning that says how much.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import InvalidInput


@dataclass
class Expansion:
    """The prompt after expansion, plus the warnings to show the user."""

    text: str
    warnings: list[str] = field(default_factory=list)


def expand(template: str, namespace: Mapping[str, Any], *, max_chars: int, dataframe_rows: int) -> Expansion:
    """Replace every ``{expr}`` in ``template`` with the value of ``expr`` in ``namespace``."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise InvalidInput(f"The prompt has an unmatched brace ({err})", "write {{ and }} for literal braces, or pass --no-expand") from None
    out = Expansion("")
    pieces: list[str] = []
    for literal, field_name, spec, conversion in parts:
        pieces.append(literal)
        if field_name is None:
            continue
        expr = f"{field_name}:{spec}" if spec else field_name  # a slice like {s[1:3]} comes back split at ':'
        value = _evaluate(expr, conversion, namespace)
        text, warning = format_value(value, expr, max_chars=max_chars, dataframe_rows=dataframe_rows)
        pieces.append(text)
        if warning:
            out.warnings.append(warning)
    out.text = "".join(pieces)
    return out


def _evaluate(expr: str, conversion: str | None, namespace: Mapping[str, Any]) -> Any:
    if not expr.strip():
        raise InvalidInput("The prompt has an empty {}", "write {{}} for literal braces, or put a name inside")
    try:
        scope = namespace if isinstance(namespace, dict) else dict(namespace)
        value = eval(expr, scope)  # noqa: S307 - the user's own namespace, as IPython's expansion does
    except NameError as err:
        name = getattr(err, "name", None) or expr
        raise InvalidInput(f"{{{expr}}}: name {name!r} is not defined",
                           f"define {name} in a cell first, or write {{{{{expr}}}}} for literal braces") from None
    except SyntaxError:
        raise InvalidInput(f"{{{expr}}} is not a Python expression",
                           "write {{ and }} for literal braces, or pass --no-expand") from None
    except Exception as err:  # noqa: BLE001 - any error in the user's expression is reported, not raised
        raise InvalidInput(f"{{{expr}}} raised {_first_line(err)}",
                           "fix the expression, or write {{ and }} for literal braces") from None
    if conversion == "r":
        return repr(value)
    if conversion == "a":
        return ascii(value)
    return value


def format_value(value: Any, label: str, *, max_chars: int, dataframe_rows: int) -> tuple[str, str | None]:
    """Text for one value, and a warning when it had to be cut."""
    notes: list[str] = []
    if _is_pandas(value, "DataFrame") or _is_pandas(value, "Series"):
        text, shown = dataframe_markdown(value, dataframe_rows)
        if shown < len(value):
            notes.append(f"{{{label}}} has {len(value):,} rows; sent the first {shown:,} "
                         f"(raise %config QwenMagics.dataframe_rows to send more)")
    elif isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", errors="replace")
        if "\ufffd" in text:
            notes.append(f"{{{label}}} is not valid UTF-8; undecodable bytes were replaced with \ufffd "
                         f"(decode it yourself to send it as meant, e.g. {{{label}.decode('latin-1')}})")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = str(value)
        except Exception as err:  # noqa: BLE001 - a broken __str__ is the value's problem, reported in one line
            raise InvalidInput(f"{{{label}}} could not be turned into text: str() raised {_first_line(err)}",
                               f"expand something printable instead, e.g. {{{label}!r}}") from None
    if max_chars and len(text) > max_chars:
        cut = len(text) - max_chars
        text = f"{text[:max_chars]}\n[… {cut:,} characters cut]"
        notes.append(f"{{{label}}} is {cut + max_chars:,} characters; sent the first {max_chars:,} and cut {cut:,} "
                     f"(raise %config QwenMagics.max_value_chars to send more)")
    if _has_surrogates(text):  # e.g. bytes decoded with errors="surrogateescape": not sendable as UTF-8
        text = text.encode("utf-8", errors="replace").decode("utf-8")
        notes.append(f"{{{label}}} is not valid UTF-8 text; undecodable characters were replaced with ? "
                     "(decode the original bytes with their real encoding to send them as meant)")
    return text, "; ".join(notes) or None


def _first_line(err: BaseException) -> str:
    """``Type: message`` of an exception, on one line (a multi-line message is cut at its first line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    more = f" (+{len(lines) - 1} more line{'s' if len(lines) > 2 else ''})" if len(lines) > 1 else ""
    return f"{type(err).__name__}: {lines[0]}{more}" if lines else type(err).__name__


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_pandas(value: Any, name: str) -> bool:
    cls = type(value)
    return cls.__name__ == name and cls.__module__.split(".")[0] == "pandas"


def dataframe_markdown(frame: Any, rows: int, max_columns: int = 20) -> tuple[str, int]:
    """A GitHub-style markdown table of the first ``rows`` rows (pandas' own needs tabulate)."""
    if _is_pandas(frame, "Series"):
        frame = frame.to_frame()
    head = frame.iloc[:rows, :max_columns]
    header = [str(frame.index.name or "")] + [str(c) for c in head.columns]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for index, row in zip(head.index, head.itertuples(index=False)):
        lines.append("| " + " | ".join(_cell(v) for v in (index, *row)) + " |")
    if frame.shape[1] > max_columns:
        lines.append(f"\n({frame.shape[1] - max_columns} more columns not shown)")
    return "\n".join(lines), len(head)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
