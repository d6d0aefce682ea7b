"""From a magic's options and the shared settings to a :class:`Request`.

Everything here is checked locally, before anything is sent: ranges, names,
the key's presence.  Per-call options override the settings for one request
and never change them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..local import model as local_model
from .config import (ConfigView, QwenSettings, check_penalties, check_temperature, check_top_p, dashscope_root,
                     find_region)
from ..errors import InvalidInput, missing_key
from .expand import expand
from .media import media_url, user_content
from ..models import LOCAL_LACKS, is_local, known, likely_typo
from ..request import Endpoint, Request, Sampling
from ..tokens.prices import price_for
from ..tools import Tool, tools_from
from .value import Options

MAX_TOKENS_LIMIT = 131_072
FORMAT_INSTRUCTIONS = {
    "code": "Answer with code only, in one fenced code block.",
    "json": "Answer with one JSON object only, no prose.",
}


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
    format: str = "markdown"
    """How the answer is shown and read: ``options.format``, or ``json`` under ``--schema``."""
    """How many times to send the request: ``-n K`` where one request cannot carry ``n`` (K answers, K requests)."""


def prepare(settings: QwenSettings | ConfigView, options: Options, template: str, namespace: Mapping[str, Any], *,
            history: list[dict[str, Any]] | None = None, listed: list[str] | None = None,
            reasoning_shown: bool = True) -> Prepared:
    """Turn options, a prompt template and the notebook's namespace into a checked :class:`Request`.

    The one way every surface builds a request, so an option means, checks
    and fails the same everywhere.  ``{expr}`` is expanded unless
    ``not options.expand``; ``history`` holds a conversation's earlier turns;
    ``listed`` is what the endpoint last said it offers (for the typo check); ``reasoning_shown`` false: the
    surface shows no reasoning (a map), so the no-key notice says nothing of a Thinking section.
    Raises :class:`~qwen_magics.errors.QwenMagicsError` for anything that can
    be checked here, before anything is sent.
    """
    expansion = None if not options.expand else expand(
        template, namespace, max_chars=settings.max_value_chars, dataframe_rows=settings.dataframe_rows)
    prompt = (expansion.text if expansion else template).strip()
    if not prompt:
        raise InvalidInput("The prompt is empty", "write it after %qwen, or in the cell body under %%qwen")
    content = user_content(prompt, [media_url(x, namespace, "image") for x in options.image],
                           [media_url(x, namespace, "video") for x in options.video])
    schema, validator = json_schema_of(options.schema, namespace) if options.schema is not None else (None, None)
    if schema is not None:
        options = options.but(format="json")  # before the system prompt, which then asks for JSON as -f json does
    messages = messages_for(system_prompt(options, settings), content, history)
    if options.prefix is not None:
        messages.append(partial_message(options.prefix, namespace))
    tools = tuple(tools_from(options.tools, namespace)) if options.tools else ()
    model, model_notice = choose_model(options, settings, reasoning_shown)
    request = make_request(options, settings, messages, model, schema, tuple(t.spec for t in tools))
    notices = [*(expansion.warnings if expansion else ()), *replaced_fields(request),
               *not_applied(options, settings, model)]
    answers = options.n or 1
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
    return Prepared(request, prompt, tuple(notices), model_notice, validator, tools, requests, options.format)


def for_prompt(prepared: Prepared, prompt: str) -> Prepared:
    """``prepared`` (made by :func:`prepare` without expansion or history) asking ``prompt`` instead.

    What :func:`prepare` checks and reads, but for the prompt's emptiness, comes from the options and the
    settings (the media too), so the rows of a map after the first are built from the first: the same
    request with its user message's text replaced.
    """
    prompt = prompt.strip()
    if not prompt:
        raise InvalidInput("The prompt is empty", "write it after %qwen, or in the cell body under %%qwen")
    messages = list(prepared.request.messages)
    at = max(i for i, message in enumerate(messages) if message["role"] == "user")
    content = messages[at]["content"]
    messages[at] = {**messages[at], "content": prompt if isinstance(content, str) else
                    [{"type": "text", "text": prompt}, *content[1:]]}
    request = dataclasses.replace(prepared.request, messages=tuple(messages))
    return dataclasses.replace(prepared, request=request, prompt=prompt)


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


def choose_model(options: Options, settings: QwenSettings | ConfigView,
                 reasoning_shown: bool = True) -> tuple[str, str | None]:
    """The model to ask, and a notice when it was chosen for the user.

    With no key, no model named (neither -m nor a configured one) and no base
    URL, the in-process local model answers, so a new user or a classroom gets
    real answers without an account.
    """
    if options.model:
        return options.model, None
    named = settings.model != QwenSettings.model.default_value
    if named or options.base_url or options.region or settings.base_url or os.environ.get(settings.api_key_env):
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


def endpoint_for(settings: QwenSettings | ConfigView, region: str | None, base_url: str | None, timeout: float | None,
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


def make_request(options: Options, settings: QwenSettings | ConfigView, messages: list[dict[str, Any]],
                 model: str, schema: dict[str, Any] | None = None,
                 tools: tuple[dict[str, Any], ...] = ()) -> Request:
    """Check every option that can be checked here, and build the request.

    ``schema`` is the JSON Schema from --schema, ``tools`` the tool specs from --tools.
    """
    def pick(name: str) -> Any:
        """The option if given, else the setting (None where neither exists)."""
        value = getattr(options, name)
        return value if value is not None else getattr(settings, name, None)

    _check_range("n", options.n, 1, 4, "-n 3")
    sampling = Sampling(temperature=pick("temperature"), top_p=pick("top_p"), top_k=pick("top_k"), seed=pick("seed"),
                        max_tokens=pick("max_tokens"), stop=options.stop,
                        presence_penalty=pick("presence_penalty"), repetition_penalty=pick("repetition_penalty"))
    check_temperature(sampling.temperature)
    check_top_p(sampling.top_p)
    check_penalties(sampling.presence_penalty, sampling.repetition_penalty)
    _check_range("top_k", sampling.top_k, 1, None, "--top-k 20")
    _check_range("seed", sampling.seed, 0, 2**31 - 1, "--seed 42")
    _check_range("max_tokens", sampling.max_tokens, 1, MAX_TOKENS_LIMIT, "--max-tokens 512")
    thinking, budget = pick("thinking"), pick("thinking_budget")
    _check_range("thinking_budget", budget, 1, MAX_TOKENS_LIMIT, "--thinking-budget 1024")
    if options.format == "json":
        if options.thinking:
            raise InvalidInput("JSON output cannot be combined with --thinking", "drop --thinking, or drop -f json")
        thinking = False
    if messages and messages[-1].get("partial"):  # Model Studio's partial mode is for non-thinking mode only
        if options.thinking:
            raise InvalidInput("--prefix (partial mode) cannot be combined with --thinking",
                               "drop --thinking, or drop --prefix")
        thinking = False
    search, stream = bool(pick("search")), settings.stream and options.stream
    if is_local(model):  # what it would ignore is not sent, so the result and the run log say what was used
        thinking, budget, search, stream = None, None, False, True
    api = options.api or settings.api
    extra = extra_params(options.param)
    if api == "responses":
        for name, flag in (("presence_penalty", "--presence-penalty"), ("repetition_penalty", "--repetition-penalty")):
            if getattr(sampling, name) is not None:
                raise InvalidInput(f"{flag} is not available with --api responses", "use --api chat or dashscope")
    if extra and is_local(model):
        raise InvalidInput("--param is not available with the local models: llama.cpp takes no extra fields",
                           "drop --param, or use a Model Studio model or --base-url")
    if api == "responses" and options.logprobs:
        raise InvalidInput("--logprobs is not available with --api responses", "use --api chat for token probabilities")
    if api == "responses" and messages and messages[-1].get("partial"):
        raise InvalidInput("--prefix (partial mode) is not available with --api responses", "use --api chat or dashscope")
    if tools and is_local(model):
        raise InvalidInput("--tools is not available with the local models",
                           "use a Model Studio model (set DASHSCOPE_API_KEY) or --base-url")
    if options.timeout is not None and not options.timeout > 0:  # also NaN; the configured timeout is checked by its trait
        raise InvalidInput(f"timeout {options.timeout:g} is out of range",
                           "use a number of seconds above 0, e.g. --timeout 60")
    endpoint = endpoint_for(settings, options.region, options.base_url, options.timeout, model, api)
    if endpoint.key_required and endpoint.api_key() is None:
        raise missing_key(endpoint.api_key_env, endpoint.region)
    _check_range("logprobs", options.logprobs, 1, 20, "--logprobs 5")
    return Request(
        messages=tuple(messages), model=model, endpoint=endpoint, sampling=sampling, logprobs=options.logprobs,
        price=price_for(model, endpoint.region, settings.prices, local=is_local(model)),
        thinking=thinking, thinking_budget=budget, response_format=response_format(options.format, schema),
        stream=stream, protocol="local" if is_local(model) else api, tools=tools, search=search, extra=extra,
    )


_LOCAL_UNUSED = {  # options that only a remote endpoint uses, and why the local model has no use for them
    "api": "the local model runs in this kernel, not behind an API",
    "region": "the local model runs in this kernel, in no region",
    "base_url": "the local model runs in this kernel, not on a server",
    "timeout": "the local model runs in this kernel, with no connection to wait on",
}


def not_applied(options: Options, settings: QwenSettings | ConfigView, model: str) -> list[str]:
    """One line for each option asked for that the chosen model does not honour (the request leaves it out).

    The local model cannot search or reason, and always streams; an option given in the cell is named by its
    flag, one from the configuration by its setting.
    """
    if not is_local(model):
        return []
    lines = []
    for name, why in LOCAL_LACKS.items():
        given = getattr(options, name)
        value = given if given is not None else getattr(settings, name, None)
        if value:
            source = "--" + name.replace("_", "-") if given is not None else f"QwenMagics.{name} = {value!r}"
            lines.append(f"{source} is not applied: {why}")
    for name, why in _LOCAL_UNUSED.items():
        if getattr(options, name) is not None:
            lines.append(f"--{name.replace('_', '-')} is not applied: {why}")
    if not (options.stream and settings.stream):
        source = "--no-stream" if not options.stream else "QwenMagics.stream = False"
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


def system_prompt(options: Options, settings: QwenSettings | ConfigView) -> str:
    """The system prompt: -s or the configured one, plus what -f code / -f json ask of the model."""
    parts = [options.system if options.system is not None else settings.system, FORMAT_INSTRUCTIONS.get(options.format, "")]
    return "\n\n".join(p for p in parts if p)


def messages_for(system: str, prompt: Any, history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The messages of a request: the system prompt if any, earlier turns, then the prompt."""
    return ([{"role": "system", "content": system}] if system else []) + (history or []) + [
        {"role": "user", "content": prompt}]


def json_schema_of(schema: Any, namespace: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """--schema NAME: a JSON Schema dict, or a pydantic model class (returned too, to validate the answer).

    From Python the dict or class may be given itself rather than its name.
    """
    if isinstance(schema, str):
        if schema not in namespace:
            raise InvalidInput(f"--schema {schema!r}: no such variable",
                               "define a JSON Schema dict or a pydantic model first")
        name, value = schema, namespace[schema]
    else:
        name, value = getattr(schema, "__name__", "schema"), schema
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


def _check_range(name: str, value: int | None, low: int, high: int | None, example: str) -> None:
    if value is None or (value >= low and (high is None or value <= high)):
        return
    bound = f"between {low} and {high:,}" if high is not None else f"{low} or more"
    raise InvalidInput(f"{name} {value} is out of range", f"use a value {bound}, e.g. {example}")
