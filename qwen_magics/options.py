"""From a magic's options and the shared settings to a :class:`Request`.

Everything here is checked locally, before anything is sent: ranges, names,
the key's presence.  Per-call options override the settings for one request
and never change them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
from dataclasses import dataclass
from typing import Any, Mapping

from IPython.core.error import UsageError

from . import local_model
from .config import QwenSettings, check_penalties, check_temperature, check_top_p, dashscope_root, find_region
from .errors import InvalidInput, missing_key
from .expand import expand
from .media import media_url, user_content
from .models import LOCAL_LACKS, is_local, known, likely_typo
from .request import Endpoint, Request, Sampling
from .tools import Tool, tools_from

MAX_TOKENS_LIMIT = 131_072
_SEPARATOR = re.compile(r"(^|\s)--(\s|$)")
FORMAT_INSTRUCTIONS = {
    "code": "Answer with code only, in one fenced code block.",
    "json": "Answer with one JSON object only, no prose.",
}


def parse_options(parser: argparse.ArgumentParser, tokens: list[str], magic: str) -> argparse.Namespace:
    """Parse option tokens; argparse's one-line complaint ends, as split_line's do, with where to read more."""
    try:
        return parser.parse_args(tokens)
    except UsageError as err:
        message = str(err)
        if f"%{magic}?" in message:
            raise
        raise UsageError(f"{message}: see %{magic}? for the options") from None


def split_line(parser: argparse.ArgumentParser, line: str, cell_mode: bool) -> tuple[list[str], str]:
    """Split a magic line into option tokens and the prompt text that follows them.

    The prompt is kept verbatim (apostrophes and all): only the leading options
    are tokenised, shell-style.  An option with an optional value (``-c``)
    takes the next word only in cell mode or when ``--`` ends the options
    later on the line, so ``%qwen -c explain this`` does not eat "explain".
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
            raise UsageError(f"Unknown option {tok}: see %qwen? for the options "
                             "(to start a prompt with '-', put -- before it)")
        tokens.append(tok)
        glued = "=" in tok or (action is not actions.get(tok))
        if not glued and action.nargs != 0:
            want = action.nargs != "?" or cell_mode or _SEPARATOR.search(line[pos:])
            nxt = _skip_space(line, pos)
            if want and nxt < len(line) and not (action.nargs == "?" and line[nxt] == "-"):
                value, pos = _token(line, nxt)
                tokens.append(value)
            elif action.nargs != "?":
                raise UsageError(f"Option {tok} needs a value: see %qwen? for its meaning")
        pos = _skip_space(line, pos)
    return tokens, line[pos:].strip()


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


@dataclass(frozen=True)
class Prepared:
    """A request built from a magic's or a widget's options, and what to tell the user about it."""

    request: Request
    prompt: str
    """The prompt as sent (after ``{expr}`` expansion): what a conversation remembers."""
    notices: tuple[str, ...] = ()
    """One-line warnings to show above the answer (a likely typo, a value cut short)."""
    model_notice: str | None = None
    """Why the model was chosen for the user (no key: the local model), worth saying once per kernel."""
    validator: Any = None
    """The pydantic model class of ``--schema``, to validate the parsed answer."""
    tools: tuple[Tool, ...] = ()
    requests: int = 1
    """How many times to send the request: ``-n K`` where one request cannot carry ``n`` (K answers, K requests)."""


def prepare(settings: QwenSettings, args: argparse.Namespace, template: str, namespace: Mapping[str, Any], *,
            history: list[dict[str, Any]] | None = None, listed: list[str] | None = None,
            reasoning_shown: bool = True) -> Prepared:
    """Turn options, a prompt template and the notebook's namespace into a checked :class:`Request`.

    The one way every surface builds a request, so an option means, checks
    and fails the same everywhere.  ``{expr}`` is expanded unless
    ``args.no_expand``; ``history`` holds a conversation's earlier turns;
    ``listed`` is what the endpoint last said it offers (for the typo check); ``reasoning_shown`` false: the
    surface shows no reasoning (a map), so the no-key notice says nothing of a Thinking section.
    Raises :class:`~qwen_magics.errors.QwenMagicsError` for anything that can
    be checked here, before anything is sent.
    """
    expansion = None if getattr(args, "no_expand", False) else expand(
        template, namespace, max_chars=settings.max_value_chars, dataframe_rows=settings.dataframe_rows)
    prompt = (expansion.text if expansion else template).strip()
    if not prompt:
        raise InvalidInput("The prompt is empty", "write it after %qwen, or in the cell body under %%qwen")
    content = user_content(prompt, [media_url(x, namespace, "image") for x in getattr(args, "image", None) or ()],
                           [media_url(x, namespace, "video") for x in getattr(args, "video", None) or ()])
    schema, validator = json_schema_of(args.schema, namespace) if getattr(args, "schema", None) else (None, None)
    if schema is not None:
        args.format = "json"  # before the system prompt, which then asks for JSON as -f json does
    messages = messages_for(system_prompt(args, settings), content, history)
    if getattr(args, "prefix", None) is not None:
        messages.append(partial_message(args.prefix, namespace))
    tools = tuple(tools_from(args.tools, namespace)) if getattr(args, "tools", None) else ()
    model, model_notice = choose_model(args, settings, reasoning_shown)
    request = make_request(args, settings, messages, model, schema, tuple(t.spec for t in tools))
    notices = [*(expansion.warnings if expansion else ()), *replaced_fields(request),
               *not_applied(args, settings, model)]
    answers = getattr(args, "n", None) or 1
    requests = 1
    if answers > 1:
        why = why_not_n(request)
        if why is None:
            request = dataclasses.replace(request, n=answers)
        else:
            requests = answers
            notices.append(f"-n {answers}: {why}, so the {answers} answers are made as {answers} requests")
    if guess := likely_typo(model, listed):
        notices.insert(0, f"{model!r} is not a model this package knows: did you mean {guess!r}? "
                          "(sent as written; %qwen_models lists what the endpoint offers)")
    return Prepared(request, prompt, tuple(notices), model_notice, validator, tools, requests)


def why_not_n(request: Request) -> str | None:
    """Why one request cannot ask for several answers (``n``), or None when it can.

    Model Studio takes ``n`` on Chat Completions, for models answering without thinking and without tools.
    """
    if request.protocol == "local":
        return "the local model samples one answer at a time"
    if request.protocol != "chat":
        return f"--api {request.protocol} takes one answer per request"
    if request.tools:
        return "a request with --tools takes one answer"
    model = known(request.model)
    if request.thinking or (request.thinking is None and model is not None and model.thinks_by_default):
        return f"{request.model} thinks here, and a thinking request takes one answer"
    return None


def choose_model(args: argparse.Namespace, settings: QwenSettings, reasoning_shown: bool = True
                 ) -> tuple[str, str | None]:
    """The model to ask, and a notice when it was chosen for the user.

    With no key, no model named (neither -m nor a configured one) and no base
    URL, the in-process local model answers, so a new user or a classroom gets
    real answers without an account.
    """
    if args.model:
        return args.model, None
    named = settings.model != QwenSettings.model.default_value
    if named or args.base_url or args.region or settings.base_url or os.environ.get(settings.api_key_env):
        return settings.model, None
    model = local_model.default_model()
    if not local_model.is_assembled(model):
        return settings.model, None  # the missing-key error follows, and names the offline option
    env = settings.api_key_env
    if not reasoning_shown:
        return "local", (f"No {env} set: answering with {model.title}, running locally in this kernel "
                         f"(set {env} to use Model Studio)")
    return "local", (f"No {env} set: answering with {model.title}, running locally in this "
                     f"kernel; it does not reason, so no Thinking section appears (set {env} "
                     "to use Model Studio, whose models reason)")


#: Where each protocol lives on a DashScope host.
API_PATHS = {"chat": "/compatible-mode/v1", "responses": "/api/v2/apps/protocols/compatible-mode/v1",
             "dashscope": "/api/v1"}


def endpoint_for(settings: QwenSettings, region: str | None, base_url: str | None, timeout: float | None,
                 model: str = "", api: str = "chat") -> Endpoint:
    """Where the request goes: the local runtime, an explicit base URL, or the region's DashScope host."""
    common = dict(api_key_env=settings.api_key_env, timeout=timeout or settings.timeout,
                  connect_timeout=settings.connect_timeout, max_retries=settings.max_retries,
                  context=settings.local_context)
    if is_local(model):
        return Endpoint(base_url="local", key_required=False, **common)
    url = base_url or (settings.base_url if region is None else "")
    if url:
        if api == "dashscope":
            raise InvalidInput("--api dashscope talks to DashScope hosts only", "drop --base-url, or use --api chat")
        return Endpoint(base_url=url.rstrip("/"), key_required=False, **common)
    chosen = find_region(region or settings.region)
    root = dashscope_root(chosen, settings.workspace)
    return Endpoint(base_url=root + API_PATHS[api], region=chosen.name, **common)


def make_request(args: argparse.Namespace, settings: QwenSettings, messages: list[dict[str, Any]],
                 model: str, schema: dict[str, Any] | None = None,
                 tools: tuple[dict[str, Any], ...] = ()) -> Request:
    """Check every option that can be checked here, and build the request.

    ``schema`` is the JSON Schema from --schema, ``tools`` the tool specs from --tools.
    """
    def pick(name: str) -> Any:
        """The option if given, else the setting (None where neither exists)."""
        value = getattr(args, name, None)
        return value if value is not None else getattr(settings, name, None)

    _check_range("n", getattr(args, "n", None), 1, 4, "-n 3")
    sampling = Sampling(temperature=pick("temperature"), top_p=pick("top_p"), top_k=pick("top_k"), seed=pick("seed"),
                        max_tokens=pick("max_tokens"), stop=tuple(args.stop or ()),
                        presence_penalty=pick("presence_penalty"), repetition_penalty=pick("repetition_penalty"))
    check_temperature(sampling.temperature)
    check_top_p(sampling.top_p)
    check_penalties(sampling.presence_penalty, sampling.repetition_penalty)
    _check_range("top_k", sampling.top_k, 1, None, "--top-k 20")
    _check_range("seed", sampling.seed, 0, 2**31 - 1, "--seed 42")
    _check_range("max_tokens", sampling.max_tokens, 1, MAX_TOKENS_LIMIT, "--max-tokens 512")
    thinking, budget = pick("thinking"), pick("thinking_budget")
    _check_range("thinking_budget", budget, 1, MAX_TOKENS_LIMIT, "--thinking-budget 1024")
    if args.format == "json":
        if args.thinking:
            raise InvalidInput("JSON output cannot be combined with --thinking", "drop --thinking, or drop -f json")
        thinking = False
    if messages and messages[-1].get("partial"):  # Model Studio's partial mode is for non-thinking mode only
        if args.thinking:
            raise InvalidInput("--prefix (partial mode) cannot be combined with --thinking",
                               "drop --thinking, or drop --prefix")
        thinking = False
    search, stream = bool(pick("search")), settings.stream and not args.no_stream
    if is_local(model):  # what it would ignore is not sent, so the result and the run log say what was used
        thinking, budget, search, stream = None, None, False, True
    api = args.api or settings.api
    extra = extra_params(getattr(args, "param", None))
    if api == "responses":
        for name, flag in (("presence_penalty", "--presence-penalty"), ("repetition_penalty", "--repetition-penalty")):
            if getattr(sampling, name) is not None:
                raise InvalidInput(f"{flag} is not available with --api responses", "use --api chat or dashscope")
    if extra and is_local(model):
        raise InvalidInput("--param is not available with the local models: llama.cpp takes no extra fields",
                           "drop --param, or use a Model Studio model or --base-url")
    if api == "responses" and args.logprobs:
        raise InvalidInput("--logprobs is not available with --api responses", "use --api chat for token probabilities")
    if api == "responses" and messages and messages[-1].get("partial"):
        raise InvalidInput("--prefix (partial mode) is not available with --api responses", "use --api chat or dashscope")
    if tools and is_local(model):
        raise InvalidInput("--tools is not available with the local models",
                           "use a Model Studio model (set DASHSCOPE_API_KEY) or --base-url")
    if args.timeout is not None and not args.timeout > 0:  # also NaN; the configured timeout is checked by its trait
        raise InvalidInput(f"timeout {args.timeout:g} is out of range",
                           "use a number of seconds above 0, e.g. --timeout 60")
    endpoint = endpoint_for(settings, args.region, args.base_url, args.timeout, model, api)
    if endpoint.key_required and endpoint.api_key() is None:
        raise missing_key(endpoint.api_key_env, endpoint.region)
    _check_range("logprobs", args.logprobs, 1, 20, "--logprobs 5")
    return Request(
        messages=tuple(messages), model=model, endpoint=endpoint, sampling=sampling, logprobs=args.logprobs,
        price=(0.0, 0.0) if is_local(model) else _price(settings.prices.get(model)),
        thinking=thinking, thinking_budget=budget, response_format=response_format(args.format, schema),
        stream=stream, protocol="local" if is_local(model) else api, tools=tools, search=search, extra=extra,
    )


_LOCAL_UNUSED = {  # options that only a remote endpoint uses, and why the local model has no use for them
    "api": "the local model runs in this kernel, not behind an API",
    "region": "the local model runs in this kernel, in no region",
    "base_url": "the local model runs in this kernel, not on a server",
    "timeout": "the local model runs in this kernel, with no connection to wait on",
}


def not_applied(args: argparse.Namespace, settings: QwenSettings, model: str) -> list[str]:
    """One line for each option asked for that the chosen model does not honour (the request leaves it out).

    The local model cannot search or reason, and always streams; an option given in the cell is named by its
    flag, one from the configuration by its setting.
    """
    if not is_local(model):
        return []
    lines = []
    for name, why in LOCAL_LACKS.items():
        given = getattr(args, name, None)
        value = given if given is not None else getattr(settings, name, None)
        if value:
            source = "--" + name.replace("_", "-") if given is not None else f"QwenMagics.{name} = {value!r}"
            lines.append(f"{source} is not applied: {why}")
    for name, why in _LOCAL_UNUSED.items():
        if getattr(args, name, None) is not None:
            lines.append(f"--{name.replace('_', '-')} is not applied: {why}")
    if args.no_stream or not settings.stream:
        source = "--no-stream" if args.no_stream else "QwenMagics.stream = False"
        lines.append(f"{source} is not applied: the local model shows its answer as it generates it")
    return lines


def extra_params(items: list[str] | None) -> tuple[tuple[str, Any], ...]:
    """``--param KEY=VALUE`` pairs: VALUE as JSON (numbers, booleans, objects), else as the string written."""
    out = []
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InvalidInput(f"--param {item!r} is not KEY=VALUE",
                               "write e.g. --param enable_search=true or --param search_options='{\"forced_search\": true}'")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.append((key.strip(), value))
    return tuple(out)


def replaced_fields(request: Request) -> list[str]:
    """One line for each ``--param`` that replaces a value the package sets itself."""
    own = {**dataclasses.replace(request, extra=()).parameters(), "messages": "(the prompt)"}
    return [f"--param {key} replaces the {key} this request would send ({own[key]!r} becomes {value!r})"
            for key, value in request.extra if key in own]


def system_prompt(args: argparse.Namespace, settings: QwenSettings) -> str:
    """The system prompt: -s or the configured one, plus what -f code / -f json ask of the model."""
    parts = [args.system if args.system is not None else settings.system, FORMAT_INSTRUCTIONS.get(args.format, "")]
    return "\n\n".join(p for p in parts if p)


def messages_for(system: str, prompt: Any, history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The messages of a request: the system prompt if any, earlier turns, then the prompt."""
    return ([{"role": "system", "content": system}] if system else []) + (history or []) + [
        {"role": "user", "content": prompt}]


def json_schema_of(name: str, namespace: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """--schema NAME: a JSON Schema dict, or a pydantic model class (returned too, to validate the answer)."""
    if name not in namespace:
        raise InvalidInput(f"--schema {name!r}: no such variable", "define a JSON Schema dict or a pydantic model first")
    value = namespace[name]
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        try:
            return value.model_json_schema(), value
        except Exception as err:  # noqa: BLE001 - e.g. a field type pydantic cannot describe in JSON Schema
            detail = (str(err).strip().splitlines() or [""])[0]
            raise InvalidInput(f"--schema {name}: pydantic cannot describe it as a JSON Schema "
                               f"({type(err).__name__}: {detail})",
                               "give its fields JSON types: str, int, float, bool, lists, dicts, nested models") from None
    if isinstance(value, dict) and isinstance(value.get("type", "object"), str) and (
            "properties" in value or "type" in value or "$ref" in value):
        problem = _schema_problem(value)
        if problem:
            raise InvalidInput(f"--schema {name}: {problem}", "fix the dict, e.g. {'type': 'object', 'properties': "
                               "{'name': {'type': 'string'}}, 'required': ['name']}")
        return value, None
    raise InvalidInput(f"--schema {name}: a {type(value).__name__} is not a JSON Schema",
                       "give a dict like {'type': 'object', 'properties': {...}} or a pydantic model class")


def _schema_problem(schema: dict[str, Any]) -> str | None:
    """The mistakes easy to make in a hand-written JSON Schema dict (a shallow check, not a validator)."""
    properties, required = schema.get("properties", {}), schema.get("required", [])
    if not isinstance(properties, dict) or not all(isinstance(p, dict) for p in properties.values()):
        return "'properties' must map each property name to a schema (a dict)"
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return "'required' must be a list of property names"
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as err:
        return f"it cannot be sent as JSON ({err})"
    return None


def response_format(fmt: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the service is asked for: schema-constrained JSON, plain JSON mode, or nothing."""
    if schema is not None:
        return {"type": "json_schema", "json_schema": {"name": str(schema.get("title", "answer"))[:64] or "answer",
                                                       "schema": schema, "strict": True}}
    return {"type": "json_object"} if fmt == "json" else None


def partial_message(prefix: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Partial mode: an assistant message the model continues (``prefix`` may name a string variable)."""
    value = namespace.get(prefix, prefix) if prefix.isidentifier() else prefix
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"--prefix {prefix!r} is not text", "give the text itself, or the name of a str variable")
    return {"role": "assistant", "content": value, "partial": True}


def _price(price: list[float] | None) -> tuple[float, float] | None:
    return (float(price[0]), float(price[1])) if price else None


def _check_range(name: str, value: int | None, low: int, high: int | None, example: str) -> None:
    if value is None or (value >= low and (high is None or value <= high)):
        return
    bound = f"between {low} and {high:,}" if high is not None else f"{low} or more"
    raise InvalidInput(f"{name} {value} is out of range", f"use a value {bound}, e.g. {example}")
