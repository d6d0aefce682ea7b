"""Let ``%qwen What is a Python list?`` ask its question instead of opening IPython's help.

IPython reads any line ending in ``?`` as a help request for the last name on it
(its ``HelpEnd`` token transformer, which runs before magics are recognised), so
``%qwen What is recursion?`` answers "Object `recursion` not found".  The
cleanup transformer here runs first: it turns a ``%qwen <prompt>?`` line into
the very call IPython makes for a ``%qwen`` line without the ``?``.
``%qwen?`` and ``%qwen??`` alone stay help requests.
"""

from __future__ import annotations

import re
import tokenize

from IPython.core.inputtransformer2 import assemble_continued_line, find_end_of_continued_line, make_tokens_by_line

#: Line magics of the package whose line is free text (a prompt) that may end in ``?``.
PROMPT_MAGICS = frozenset({"qwen"})

_HELP_ONLY = re.compile(r"%\w+\?\??")


def keep_questions(lines: list[str]) -> list[str]:
    """An ``input_transformers_cleanup`` step: each ``%qwen ...?`` line (or ``x = %qwen ...?``) becomes
    ``get_ipython().run_line_magic('qwen', '...?')``; every other line is returned unchanged."""
    if not lines or lines[0].startswith("%%"):  # a cell magic's body is its own text, not lines of code
        return lines
    after = -1
    while found := [(line, col) for line, col in _prompt_magic_starts(lines) if line > after]:
        after, col = found[0]
        lines = _as_question(lines, after, col)  # plain Python now: the next search sees past it
    return lines


def _as_question(lines: list[str], start: int, col: int) -> list[str]:
    """The lines with the prompt magic at (start, col) made a call, when its text ends in ``?`` (not help)."""
    end = find_end_of_continued_line(lines, start)
    command = assemble_continued_line(lines, (start, col), end)  # "%qwen What is X?"
    if not command.endswith("?") or _HELP_ONLY.fullmatch(command):
        return lines
    name, _, prompt = command[1:].partition(" ")
    call = f"{lines[start][:col]}get_ipython().run_line_magic({name!r}, {prompt!r})\n"
    return lines[:start] + [call] + lines[end + 1:]


def _prompt_magic_starts(lines: list[str]) -> list[tuple[int, int]]:
    """(line, column) of each ``%`` that starts a prompt magic, at the start of a logical line or right
    after its ``=`` (IPython's own grouping of the cell into logical lines, so text inside strings is skipped)."""
    starts = []
    for tokens in make_tokens_by_line(lines):
        ix = 0
        while ix < len(tokens) and tokens[ix].type in (tokenize.INDENT, tokenize.DEDENT):
            ix += 1
        if ix + 2 < len(tokens) and tokens[ix].type == tokenize.NAME and tokens[ix + 1].string == "=":
            ix += 2  # x = %qwen ...
        if ix + 1 >= len(tokens):
            continue
        escape, name = tokens[ix], tokens[ix + 1]
        if (escape.string == "%" and name.type == tokenize.NAME and name.string in PROMPT_MAGICS
                and name.start == escape.end and name.start[0] == escape.start[0]):
            starts.append((escape.start[0] - 1, escape.start[1]))
    return starts


def register(shell) -> None:
    """Add the transformer to ``shell`` once (loading the extension again does not add a second)."""
    if keep_questions not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(keep_questions)
