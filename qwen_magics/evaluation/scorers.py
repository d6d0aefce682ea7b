"""Scorers: each turns an answer (and the row's expected value) into a score in [0, 1].

``--score`` names one: ``exact``, ``contains``, ``number``, ``regex:PATTERN``,
``choice``, ``json:FIELD``, ``judge`` or ``py:NAME``.  A scorer is built and
checked before anything is sent (an unknown name, a pattern without a group,
a function that does not exist); scoring a row that cannot be scored raises
:class:`Unscorable` with one line, and the row counts as failed, never as 0.
An answer that is wrong, or says nothing the scorer can read (no number,
no letter, no JSON), scores 0.  ``judge`` is scored from a model's verdict:
see :func:`~qwen_magics.evaluation.run.verdict`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import InvalidInput

NAMES = ("exact", "contains", "number", "regex:PATTERN", "choice", "json:FIELD", "judge", "py:NAME")
_END_PUNCTUATION = ".!?;:,"
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_CHOICE_STATED = re.compile(r"(?i)\banswer(?:\s+is)?\s*[:=]?\s*\(?\**([A-J])\b")
_CHOICE_LEAD = re.compile(r"(?i)^\W*\(?([A-J])\**(?:[).:\]]|\s*$)")
_CHOICE_BRACKETED = re.compile(r"(?i)\(([A-J])\)")


class Unscorable(Exception):
    """A row that cannot be scored; ``str(err)`` is the one line the row's ``error`` shows."""


@dataclass(frozen=True)
class Scorer:
    """A named scoring rule; ``score(answer, expected, row)`` is in [0, 1] (None for ``judge``, scored apart)."""

    name: str
    score: Callable[[str, Any, Mapping[str, Any]], float] | None
    needs_expected: bool = True
    needs_json: bool = False
    check_expected: Callable[[Any], str | None] | None = None
    """What is wrong with an expected value this scorer cannot compare with (None when it can)."""


def scorer_for(spec: str, namespace: Mapping[str, Any]) -> Scorer:
    """The scorer ``spec`` names; ``py:NAME`` is looked up in ``namespace``.  InvalidInput for a bad spec."""
    kind, _, argument = spec.partition(":")
    if kind == "exact" and not argument:
        return Scorer("exact", lambda answer, expected, row: float(normalized(answer) == normalized(expected)))
    if kind == "contains" and not argument:
        return Scorer("contains", lambda answer, expected, row: float(normalized(expected) in normalized(answer)))
    if kind == "number" and not argument:
        return Scorer("number", _number, check_expected=_not_a_number)
    if kind == "choice" and not argument:
        return Scorer("choice", _choice, check_expected=_not_a_letter)
    if kind == "judge" and not argument:
        return Scorer("judge", None, needs_expected=False)
    if kind == "regex" and argument:
        return _regex(argument)
    if kind == "json" and argument:
        path = argument.split(".")
        return Scorer(spec, lambda answer, expected, row: _json_field(answer, expected, path), needs_json=True)
    if kind == "py" and argument:
        return _python(argument, namespace)
    raise InvalidInput(f"--score {spec!r} is not a scorer", f"use one of {', '.join(NAMES)}")


def normalized(value: Any) -> str:
    """How ``exact`` and ``contains`` read a value: its text, case folded, surrounding space and end punctuation off."""
    text = value if isinstance(value, str) else _plain_text(value)
    return text.strip().rstrip(_END_PUNCTUATION).strip().casefold()


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (``1,234.5`` reads as 1234.5), or None."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def _number(answer: str, expected: Any, row: Mapping[str, Any]) -> float:
    value = last_number(answer)
    return float(value is not None and math.isclose(value, _as_number(expected), rel_tol=1e-9, abs_tol=1e-9))


def _as_number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return float(value)
    return float(str(value).strip().replace(",", ""))


def _not_a_number(expected: Any) -> str | None:
    try:
        number = _as_number(expected)
    except (TypeError, ValueError):
        return f"{expected!r} is not a number"
    return f"{expected!r} is not a number" if math.isnan(number) else None


def chosen_letter(answer: str) -> str | None:
    """The multiple-choice letter an answer gives: "Answer: B", "(B)", "B) ...", a lone "B"; None if none."""
    stated = _CHOICE_STATED.findall(answer)
    if stated:
        return stated[-1].upper()
    lead = _CHOICE_LEAD.match(answer.strip())
    if lead:
        return lead.group(1).upper()
    bracketed = _CHOICE_BRACKETED.findall(answer)
    return bracketed[-1].upper() if bracketed else None


def _choice(answer: str, expected: Any, row: Mapping[str, Any]) -> float:
    return float(chosen_letter(answer) == str(expected).strip().strip("()").upper())


def _not_a_letter(expected: Any) -> str | None:
    letter = str(expected).strip().strip("()")
    return None if len(letter) == 1 and letter.upper() in "ABCDEFGHIJ" else f"{expected!r} is not a letter A-J"


def _regex(pattern: str) -> Scorer:
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise InvalidInput(f"--score regex:{pattern}: not a regular expression ({err})",
                           "check the pattern, and quote it if it has spaces") from None
    if compiled.groups < 1:
        raise InvalidInput(f"--score regex:{pattern}: the pattern has no group",
                           "put the part to compare in parentheses, e.g. regex:'Answer: (\\w+)'")

    def score(answer: str, expected: Any, row: Mapping[str, Any]) -> float:
        match = compiled.search(answer)
        return float(match is not None and match.group(1) is not None
                     and normalized(match.group(1)) == normalized(expected))

    return Scorer(f"regex:{pattern}", score)


def _json_field(answer: str, expected: Any, path: list[str]) -> float:
    from ..display.postprocess import parse_json
    from ..errors import OutputFormatError

    try:
        value = parse_json(answer)
    except OutputFormatError:
        return 0.0  # not JSON: a wrong answer, as a wrong value is
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return 0.0
        value = value[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(math.isclose(value, _as_number(expected), rel_tol=1e-9, abs_tol=1e-9))
        except (TypeError, ValueError):
            return 0.0
    return float(normalized(value) == normalized(expected))


def _python(name: str, namespace: Mapping[str, Any]) -> Scorer:
    if name not in namespace:
        raise InvalidInput(f"--score py:{name}: {name!r} is not defined",
                           f"define def {name}(answer, expected, row) in a cell first")
    function = namespace[name]
    if not callable(function):
        raise InvalidInput(f"--score py:{name}: {name} is a {type(function).__name__}, not a function",
                           f"give a function {name}(answer, expected, row) returning a bool or a number in [0, 1]")

    def score(answer: str, expected: Any, row: Mapping[str, Any]) -> float:
        try:
            value = function(answer, expected, dict(row))
        except Exception as err:  # noqa: BLE001 - the user's scorer failed on this row: the row is failed
            detail = (str(err).strip().splitlines() or [""])[0]
            raise Unscorable(f"py:{name} raised {type(err).__name__}" + (f": {detail}" if detail else "")) from err
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, (int, float)) and 0 <= value <= 1:
            return float(value)
        raise Unscorable(f"py:{name} returned {value!r}, not a bool or a number in [0, 1]")

    return Scorer(f"py:{name}", score, needs_expected=False)


def _plain_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
