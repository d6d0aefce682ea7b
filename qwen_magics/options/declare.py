"""The request options, declared once for every magic, and the words of a magic line parsed into them.

``%%qwen``, ``%%qwen_map``, ``%%qwen_compare`` and ``%%qwen_eval`` take the
same request options (:data:`REQUEST_OPTIONS`), so an option is spelled,
checked and documented the same everywhere; ``%%qwen_compare`` takes the
settings it compares as comma lists.  This is the one place that knows about
argparse: what leaves it is an :class:`~qwen_magics.options.value.Options`.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any, Callable, Iterable

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument

from ..errors import InvalidInput
from ..request import APIS
from .value import Options

_SEPARATOR = re.compile(r"(^|\s)--(\s|$)")


@dataclass(frozen=True)
class Declared:
    """One request option: its flags, argparse's keywords, and how a comparison takes a list of it."""

    flags: tuple[str, ...]
    kw: dict[str, Any]
    listed: str | None = None
    """``%%qwen_compare``'s help when it takes a comma list of values (one column each); None: one value."""
    list_kw: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.kw.get("dest") or self.flags[-1].lstrip("-").replace("-", "_")


def _opt(*flags: str, listed: str | None = None, list_kw: dict[str, Any] | None = None, **kw: Any) -> Declared:
    return Declared(flags, kw, listed, list_kw or {})


REQUEST_OPTIONS: tuple[Declared, ...] = (
    _opt("-m", "--model", help="model name, e.g. qwen3.5-plus, qwen-flash, local (default: %%config QwenMagics.model)",
         listed="models, comma-separated: -m qwen3.5-plus,qwen-flash,local"),
    _opt("-s", "--system", help="system prompt"),
    _opt("-t", "--temperature", type=float, help="sampling temperature in [0, 2)",
         listed="temperatures, comma-separated: -t 0,0.7,1.3"),
    _opt("--top-p", type=float, help="nucleus sampling: keep the smallest token set with this probability, (0, 1]",
         listed="top_p values, comma-separated: --top-p 0.1,0.5,1"),
    _opt("--top-k", type=int, help="sample from the k most likely tokens"),
    _opt("--seed", type=int, help="seed for repeatable sampling", listed="seeds, comma-separated: --seed 1,2,3"),
    _opt("--thinking", dest="thinking", action="store_const", const=True, default=None, help="ask for reasoning",
         listed="on, off, or on,off (compare reasoning against none)",
         list_kw=dict(nargs="?", const="on", action=None, default=None)),
    _opt("--no-thinking", dest="thinking", action="store_const", const=False, help="ask for no reasoning",
         list_kw=dict(const="off")),
    _opt("--thinking-budget", type=int, metavar="N", help="cap on reasoning tokens"),
    _opt("--max-tokens", type=int, help="cap on answer tokens"),
    _opt("--stop", action="append", metavar="TEXT", help="stop when the model writes TEXT (repeatable)"),
    _opt("--presence-penalty", type=float, metavar="P",
         help="in [-2, 2]: above 0, words already used are less likely again (new topics)",
         listed="presence penalties, comma-separated: --presence-penalty 0,1.5"),
    _opt("--repetition-penalty", type=float, metavar="R",
         help="above 0, 1.0 means none: above 1, repeating earlier tokens is penalised (less looping)",
         listed="repetition penalties, comma-separated: --repetition-penalty 1,1.3"),
    _opt("--search", action="store_const", const=True, default=None,
         help="web search on (enable_search); the pages cited are listed under the answer where returned"),
    _opt("--param", action="append", metavar="KEY=VALUE",
         help="any other request field, VALUE as JSON (else a string), e.g. --param search_options="
              "'{\"search_strategy\": \"pro\"}'; repeatable"),
    _opt("--schema", metavar="NAME", help="structured output: a JSON Schema dict or pydantic model class named "
         "NAME; the parsed (validated) answer is result.data"),
    _opt("--prefix", metavar="TEXT",
         help="partial mode: the answer continues TEXT (or the string variable TEXT names); chat and dashscope"),
    _opt("--api", choices=APIS,
         help="protocol: OpenAI-compatible Chat Completions (default), the Responses API, or native DashScope"),
    _opt("--region", help="singapore, us, beijing, hongkong or frankfurt (keys are region-specific)"),
    _opt("--base-url", help="any OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM, Ollama)"),
    _opt("--timeout", type=float, metavar="SECONDS", help="seconds to wait for the next byte"),
    _opt("--no-stream", action="store_true", help="wait for the whole answer, then show it"),
)
_BY_DEST: dict[str, list[Declared]] = {}
for _declared in REQUEST_OPTIONS:
    _BY_DEST.setdefault(_declared.dest, []).append(_declared)
COMPARED = tuple(d.dest for d in REQUEST_OPTIONS if d.listed)
"""The options ``%%qwen_compare`` takes as comma lists: each value is a column."""


def request_arguments(*, lists: bool = False, without: Iterable[str] = ()) -> Callable:
    """Decorate a magic with every request option (``lists``: a comparison's comma lists) but ``without``."""
    skip = set(without)

    def decorate(func: Callable) -> Callable:
        for declared in reversed(REQUEST_OPTIONS):  # magic_arguments lists the last decorator applied first
            if declared.dest in skip:
                continue
            kw = dict(declared.kw)
            if lists and declared.listed is not None or (lists and declared.list_kw):
                kw.pop("type", None)
                kw.update(declared.list_kw)
                if declared.listed is not None:
                    kw["help"] = declared.listed
                kw = {k: v for k, v in kw.items() if v is not None or k == "default"}
            func = argument(*declared.flags, **kw)(func)
        return func

    return decorate


def options_from(args: argparse.Namespace, **fixed: Any) -> Options:
    """The typed options in a parsed namespace (the fields it has), with ``fixed`` on top."""
    given = {name: getattr(args, name) for name in Options.names() if hasattr(args, name)}
    if hasattr(args, "no_stream"):
        given["stream"] = not args.no_stream
    if hasattr(args, "no_expand"):
        given["expand"] = not args.no_expand
    return Options.of({**given, **fixed})


def as_words(dest: str, value: Any) -> list[str]:
    """The option words that give ``dest`` the value ``value`` (how a comparison writes a column's settings)."""
    if value is None or value == () or value is False and dest != "thinking":
        return []
    if dest == "thinking":
        on = value is True or str(value).lower() in ("on", "true", "1", "yes")
        return ["--thinking" if on else "--no-thinking"]
    flag = _BY_DEST[dest][0].flags[-1]
    if _BY_DEST[dest][0].kw.get("action") == "append":
        return [word for item in value for word in (flag, str(item))]
    if _BY_DEST[dest][0].kw.get("action") in ("store_const", "store_true"):
        return [flag]
    return [flag, str(value)]


# Parsing -----------------------------------------------------------------------------------------

def words(line: str) -> list[str]:
    """A magic line's words, shell-style, the same in every magic (``-s "Answer briefly"`` is one word)."""
    try:
        return shlex.split(line, posix=True)
    except ValueError:
        raise UsageError(f"Unclosed quote in the options: {line!r}") from None


def parse_options(parser: argparse.ArgumentParser, tokens: list[str], magic: str) -> argparse.Namespace:
    """Parse option words; every complaint is one line that ends with where to read more.

    An unknown option gets the closest known one (``--temprature``: did you mean ``--temperature``?).
    """
    try:
        return parser.parse_args(tokens)
    except UsageError as err:
        message = str(err)
        if f"%{magic}?" in message:
            raise
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown and unknown.group(1).startswith("-"):
            raise UsageError(unknown_option(parser, unknown.group(1), magic)) from None
        raise UsageError(f"{message}: see %{magic}? for the options") from None


def unknown_option(parser: argparse.ArgumentParser, word: str, magic: str) -> str:
    """The line for an option the magic does not have, naming the closest one it has."""
    name = word.split("=", 1)[0]
    known = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    bare = {flag.lstrip("-"): flag for flag in known}  # the dashes every flag shares would make all look alike
    close = get_close_matches(name.lstrip("-"), list(bare), n=1, cutoff=0.6)
    hint = f": did you mean {bare[close[0]]}?" if close else ""
    return f"Unknown option {word}{hint} (see %{magic}? for the options; to start a prompt with '-', put -- before it)"


def split_line(parser: argparse.ArgumentParser, line: str, cell_mode: bool, magic: str = "qwen") -> tuple[list[str], str]:
    """Split a magic line into option words and the prompt text that follows them.

    The prompt is kept verbatim (apostrophes and all): only the leading options
    are split, shell-style.  An option with an optional value (``-c``) takes
    the next word only in cell mode or when ``--`` ends the options later on
    the line, so ``%qwen -c explain this`` does not eat "explain".
    """
    actions = {opt: a for a in parser._actions for opt in a.option_strings}
    tokens: list[str] = []
    pos = _skip_space(line, 0)
    while pos < len(line) and line[pos] == "-":
        tok, pos = _token(line, pos)
        if tok == "--":
            break
        name = tok.split("=", 1)[0]
        action = actions.get(name) or (actions.get(tok[:2]) if not tok.startswith("--") else None)
        if action is None:
            raise UsageError(unknown_option(parser, tok, magic))
        tokens.append(tok)
        glued = "=" in tok or (action is not actions.get(tok))
        if not glued and action.nargs != 0:
            want = action.nargs != "?" or cell_mode or _SEPARATOR.search(line[pos:])
            nxt = _skip_space(line, pos)
            if want and nxt < len(line) and not (action.nargs == "?" and line[nxt] == "-"):
                value, pos = _token(line, nxt)
                tokens.append(value)
            elif action.nargs != "?":
                raise UsageError(f"Option {tok} needs a value: see %{magic}? for its meaning")
        pos = _skip_space(line, pos)
    return tokens, line[pos:].strip()


_CELL_ONLY = (("--tools", "tools"), ("--image", "image"), ("--video", "video"), ("--prefix", "prefix"),
              ("--schema", "schema"), ("-c/--chat", "chat"), ("--cache", "cache"))
"""The ``%%qwen`` options a column cannot take (its flag as the refusal names it, and its name)."""


def column_options(parser: argparse.ArgumentParser, text: str, magic: str = "qwen") -> Options:
    """A comparison's or the panel's column (or a compared setting), written as ``%qwen`` option words
    (``-m qwen-plus -t 0.7``), as request options: read by ``parser`` (``%%qwen``'s), so a column takes, checks
    and reports an option as a cell does.  What only a cell can do is refused in one line; the prompt is
    expanded once for every column, so the options expand nothing.  Errors are
    :class:`~qwen_magics.errors.InvalidInput` (``magic`` names where a parse error says to read more).
    """
    try:
        tokens, rest = split_line(parser, text, cell_mode=True, magic=magic)
        args = parse_options(parser, tokens, magic)
    except UsageError as err:
        raise InvalidInput(str(err)) from None
    if rest:
        raise InvalidInput(f"Unexpected text in the options: {rest!r}", "give options only, e.g. -m qwen-plus -t 0.7")
    for flag, name in _CELL_ONLY:
        if getattr(args, name):
            raise InvalidInput(f"{flag} works in %%qwen cells, not in comparisons or the panel",
                               "drop it from these options")
    if args.no_log:
        raise InvalidInput("--no-log applies to a whole comparison, not to one column",
                           "put it on the %%qwen_compare line, or %config QwenMagics.log = False")
    return options_from(args, expand=False)


def _skip_space(line: str, pos: int) -> int:
    while pos < len(line) and line[pos].isspace():
        pos += 1
    return pos


def _token(line: str, pos: int) -> tuple[str, int]:
    lexer = shlex.shlex(line[pos:], posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tok = lexer.get_token()
    except ValueError:
        raise UsageError(f"Unclosed quote in the options: {line[pos:]!r}") from None
    return tok or "", pos + lexer.instream.tell()
