"""Python functions as tools the model may call, and the rounds of calling them.

``--tools f,g`` offers functions from the namespace to the model.  Each one's
JSON schema comes from its signature (type hints, defaults) and its docstring
(the first paragraph describes the tool; ``name: text`` lines under ``Args:``
describe the parameters), so a well-documented function needs nothing more.

A model that wants a tool ends its answer with finish reason ``tool_calls``.
Each call is shown, run only if :func:`converse`'s ``approve`` says yes, and its
output (or error, or the refusal) goes back to the model as a ``tool`` message;
the model then answers again, for at most ``max_rounds`` rounds of calls.
Nothing a tool returns is executed: it is sent to the model as text.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

from .errors import InvalidInput
from .request import Request
from .result import Result
from .display.text import call_text

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


@dataclass(frozen=True)
class Tool:
    """A function the model may call, and the schema it sees."""

    name: str
    function: Callable[..., Any]
    spec: dict[str, Any]
    """``{"name", "description", "parameters"}``: each backend wraps it in its protocol's shape."""


@dataclass
class ToolRun:
    """One call the model asked for, and what came of it."""

    id: str
    name: str
    arguments: str
    output: str = ""
    ran: bool = False
    error: str | None = None

    def call_text(self) -> str:
        return call_text(self.name, self.arguments)


def tools_from(names: str, namespace: dict[str, Any]) -> list[Tool]:
    """The tools named in ``--tools f,g``, looked up in the user's namespace."""
    tools = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        if name not in namespace:
            raise InvalidInput(f"--tools: no function named {name!r} in the namespace",
                               "define it in a cell first, or fix the name")
        if not callable(namespace[name]):
            raise InvalidInput(f"--tools: {name!r} is a {type(namespace[name]).__name__}, not a function",
                               "pass the names of functions")
        tools.append(tool_from(namespace[name], name))
    if not tools:
        raise InvalidInput("--tools names no function", "write e.g. --tools get_weather,convert")
    return tools


def tool_from(function: Callable[..., Any], name: str | None = None) -> Tool:
    """A tool for ``function``: its schema from the signature and docstring."""
    name = name or function.__name__
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"--tools: cannot read the signature of {name!r}", "wrap it in a def") from exc
    hints = _hints(function)
    summary, arg_docs = _parse_doc(inspect.getdoc(function) or "")
    properties: dict[str, Any] = {}
    required = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise InvalidInput(f"--tools: {name}() takes *{param.name}; a tool needs named parameters",
                               "give the function explicit parameters")
        schema = _schema(hints.get(param.name, param.annotation))
        if param.name in arg_docs:
            schema["description"] = arg_docs[param.name]
        if param.default is not param.empty:
            if isinstance(param.default, (str, int, float, bool)):
                schema["default"] = param.default
        elif not _optional(hints.get(param.name)):
            required.append(param.name)
        properties[param.name] = schema
    spec = {"name": name, "description": summary or f"The Python function {name}.",
            "parameters": {"type": "object", "properties": properties, "required": required}}
    return Tool(name, function, spec)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - unresolvable annotations fall back to the raw ones
        return {}


def _parse_doc(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and parameter descriptions from an ``Args:``/``Parameters`` section."""
    paragraphs = doc.split("\n\n")
    summary = " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0].strip() else ""
    described: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if line.strip().lower().rstrip(":") in ("args", "arguments", "parameters", "params"):
            in_args = True
            continue
        if in_args and (match := _ARG_LINE.match(line)):
            described[match.group(1).lstrip("*")] = match.group(2).strip()
        elif in_args and line.strip() and not line.startswith((" ", "\t")):
            in_args = False
        if (match := re.match(r"^\s*:param\s+(?:\w+\s+)?(\w+):\s*(.+)$", line)):
            described[match.group(1)] = match.group(2).strip()
    return summary, described


def _optional(hint: Any) -> bool:
    return hint is not None and type(None) in typing.get_args(hint) and _is_union(hint)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _schema(hint: Any) -> dict[str, Any]:
    """JSON Schema for a type hint; anything unknown is described as a string."""
    if hint is inspect.Parameter.empty or hint is Any:
        return {"type": "string"}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        options = [a for a in args if a is not type(None)]
        return _schema(options[0]) if len(options) == 1 else {"anyOf": [_schema(a) for a in options]}
    if origin is Literal:
        return {"enum": list(args)}
    if hint in (list, tuple, set) or origin in (list, tuple, set):
        return {"type": "array", **({"items": _schema(args[0])} if args else {})}
    if hint is dict or origin is dict:
        return {"type": "object"}
    return {"type": "string"}


def run_call(tools: dict[str, Tool], run: ToolRun, approved: bool, max_chars: int) -> ToolRun:
    """Run one call if approved; its output (or error) as text for the model."""
    tool = tools.get(run.name)
    if tool is None:
        run.error = run.output = f"Error: there is no tool named {run.name!r}"
        return run
    if not approved:
        run.output = "The user declined to run this tool."
        return run
    try:
        arguments = json.loads(run.arguments or "{}")
        if not isinstance(arguments, dict):
            raise ValueError("expected a JSON object")
    except ValueError as exc:
        run.error = run.output = f"Error: the arguments are not a valid JSON object ({exc})"
        return run
    try:
        value = tool.function(**arguments)
        run.ran = True
    except Exception as exc:  # noqa: BLE001 - the model is told what went wrong, and may try again
        run.ran = True
        run.error = run.output = f"Error: {type(exc).__name__}: {exc}"
        return run
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) > max_chars:
        text = text[:max_chars] + f"… [cut at {max_chars:,} of {len(text):,} characters]"
    run.output = text
    return run


def follow_up(request: Request, result: Result, runs: list[ToolRun]) -> Request:
    """The next round's request: the model's calls and their outputs appended, in chat message shape."""
    calls = [{"id": r.id, "type": "function", "function": {"name": r.name, "arguments": r.arguments}} for r in runs]
    assistant = {"role": "assistant", "content": result.text, "tool_calls": calls}
    outputs = [{"role": "tool", "tool_call_id": r.id, "content": r.output} for r in runs]
    return dataclasses.replace(request, messages=(*request.messages, assistant, *outputs))


def converse(request: Request, tools: list[Tool], run_round: Callable[[Request], Result],
             approve: Callable[[ToolRun], bool], show: Callable[[ToolRun], None], *,
             max_rounds: int, max_chars: int) -> Result:
    """Answer ``request``, running the tools the model calls, until it answers without calling one.

    Returns the last round's result, carrying every round (``rounds``), every
    call (``tool_runs``) and the usage of all rounds together.  A model still
    calling tools after ``max_rounds`` rounds leaves the result incomplete.
    """
    by_name = {t.name: t for t in tools}
    rounds: list[Result] = []
    runs: list[ToolRun] = []
    while True:
        result = run_round(request)
        rounds.append(result)
        calls = result.tool_calls
        if not (result.complete and result.finish_reason == "tool_calls" and calls):
            break
        if len(rounds) > max_rounds:
            result.state = "incomplete"
            result.error = (f"the model was still calling tools after {max_rounds} rounds; "
                            "raise %config QwenMagics.max_tool_rounds to allow more")
            break
        this_round = []
        for i, call in enumerate(calls):
            run = ToolRun(call["id"] or f"call_{len(rounds)}_{i}", call["name"], call["arguments"])
            run_call(by_name, run, by_name.get(run.name) is not None and approve(run), max_chars)
            show(run)
            this_round.append(run)
        runs += this_round
        request = follow_up(request, result, this_round)
    return result.with_rounds(rounds, runs)
