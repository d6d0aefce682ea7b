"""Settings shared by the magics and the widgets, and where requests go.

``QwenSettings`` holds every default as a traitlets trait, so ``%config
QwenMagics.model = "qwen-flash"`` and ``ipython_config.py`` both work, and the
magics and the panel read one object instead of keeping copies (the surfaces
other than ``%%qwen`` read it through a :class:`ConfigView`).  Per-call options
override these values for one request and never change them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from traitlets import Bool, CFloat, CInt, Dict, Enum, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import Configurable

from ..errors import InvalidInput
from ..request import APIS

#: Environment variable that replaces scheme and host of every DashScope endpoint (proxies, loopback tests).
URL_OVERRIDE_ENV = "QWEN_MAGICS_DASHSCOPE_URL"


@dataclass(frozen=True)
class Region:
    """A Model Studio region: its id and its shared DashScope host (Frankfurt has none)."""

    name: str
    id: str
    host: str | None


REGIONS: dict[str, Region] = {
    r.name: r
    for r in (
        Region("singapore", "ap-southeast-1", "dashscope-intl.aliyuncs.com"),
        Region("us", "us-east-1", "dashscope-us.aliyuncs.com"),
        Region("beijing", "cn-beijing", "dashscope.aliyuncs.com"),
        Region("hongkong", "cn-hongkong", "cn-hongkong.dashscope.aliyuncs.com"),
        Region("frankfurt", "eu-central-1", None),
    )
}


def find_region(name: str) -> Region:
    """Look a region up by name or id (``singapore`` or ``ap-southeast-1``)."""
    wanted = name.strip().lower()
    for region in REGIONS.values():
        if wanted in (region.name, region.id):
            return region
    raise InvalidInput(f"Unknown region {name!r}", f"use one of: {', '.join(REGIONS)}")


def dashscope_root(region: Region, workspace: str = "") -> str:
    """Scheme and host for a region, honouring the override variable and workspace hosts."""
    override = os.environ.get(URL_OVERRIDE_ENV, "").strip()
    if override:
        return override.rstrip("/")
    if workspace:
        return f"https://{workspace}.{region.id}.maas.aliyuncs.com"
    if region.host is None:
        raise InvalidInput(
            f"The {region.name} region has no shared DashScope host",
            "set %config QwenMagics.workspace = '<your workspace id>' or pass --base-url",
        )
    return f"https://{region.host}"


def check_temperature(value: float | None) -> None:
    if value is not None and not 0 <= value < 2:
        raise InvalidInput(f"temperature {value} is out of range", "use a value in [0, 2), e.g. -t 0.7")


def check_top_p(value: float | None) -> None:
    if value is not None and not 0 < value <= 1:
        raise InvalidInput(f"top_p {value} is out of range", "use a value in (0, 1], e.g. --top-p 0.8")


def check_penalties(presence: float | None, repetition: float | None) -> None:
    """presence_penalty in [-2, 2]; repetition_penalty above 0 (1.0: none)."""
    if presence is not None and not -2 <= presence <= 2:
        raise InvalidInput(f"presence_penalty {presence} is out of range",
                           "use a value in [-2, 2], e.g. --presence-penalty 1.5")
    if repetition is not None and not repetition > 0:
        raise InvalidInput(f"repetition_penalty {repetition} is out of range",
                           "use a value above 0 (1.0 means none), e.g. --repetition-penalty 1.1")


class QwenSettings(Configurable):
    """Defaults for every request; the traits behind ``%config QwenMagics``."""

    model = Unicode("qwen3.5-plus", help="Model used when -m is not given; 'local' (or local:0.5b, local:1.5b, "
                    "local:/path.gguf) runs Qwen in this kernel. With no key and no model named, 'local' is used."
                    ).tag(config=True)
    region = Unicode("singapore", help="Model Studio region: singapore, us, beijing, hongkong or frankfurt.").tag(config=True)
    workspace = Unicode("", help="Workspace id: use the workspace-dedicated host (required in frankfurt).").tag(config=True)
    base_url = Unicode("", help="Any OpenAI-compatible server (vLLM, Ollama, llama.cpp); overrides region.").tag(config=True)
    api_key_env = Unicode("DASHSCOPE_API_KEY", help="Environment variable that holds the API key.").tag(config=True)
    system = Unicode("", help="System prompt sent with every request (empty: none).").tag(config=True)
    temperature = Float(None, allow_none=True, help="Sampling temperature in [0, 2); None: the model's default.").tag(config=True)
    top_p = Float(None, allow_none=True, help="Nucleus sampling in (0, 1]; None: the model's default.").tag(config=True)
    top_k = Int(None, allow_none=True, help="Top-k sampling (>= 1); None: the model's default.").tag(config=True)
    seed = Int(None, allow_none=True, help="Seed for repeatable sampling; None: random.").tag(config=True)
    max_tokens = Int(None, allow_none=True, help="Cap on answer tokens; None: the model's default.").tag(config=True)
    presence_penalty = Float(None, allow_none=True,
                             help="In [-2, 2]: above 0, words already used are less likely again; None: the "
                                  "model's default.").tag(config=True)
    repetition_penalty = Float(None, allow_none=True,
                               help="Above 0 (1.0: none): above 1, repeating earlier tokens is penalised; None: "
                                    "the model's default.").tag(config=True)
    search = Bool(False, help="Web search on for every request (--search).").tag(config=True)
    thinking = Bool(None, allow_none=True, help="Ask for reasoning (True/False); None: the model's default.").tag(config=True)
    thinking_budget = Int(None, allow_none=True, help="Cap on reasoning tokens; None: the model's default.").tag(config=True)
    api = Enum(list(APIS), "chat",
               help="Protocol: OpenAI-compatible Chat Completions, the Responses API, or the native DashScope SDK."
               ).tag(config=True)
    stream = Bool(True, help="Stream the answer as it is generated.").tag(config=True)
    timeout = CFloat(60.0, help="Seconds to wait for the next byte of an answer.").tag(config=True)
    connect_timeout = CFloat(10.0, help="Seconds to wait for a connection.").tag(config=True)
    max_retries = CInt(2, help="Retries for rate limits, server errors and dropped connections before the first token.").tag(config=True)
    history_turns = CInt(20, help="Turns kept per --chat conversation (older turns are dropped).").tag(config=True)
    max_value_chars = CInt(20_000, help="Longest text a {expr} may expand to; longer values are cut with a warning.").tag(config=True)
    dataframe_rows = CInt(20, help="Rows of a DataFrame sent when it is expanded into a prompt.").tag(config=True)
    update_interval = CFloat(0.1, help="Seconds between display updates while streaming (throttling).").tag(config=True)
    prices = Dict(value_trait=List(CFloat(), minlen=2, maxlen=2), default_value={},
                  help="Price per million input and output tokens by model, e.g. {'qwen-plus': [0.4, 1.2]}: "
                       "shown as cost in footers and comparisons.").tag(config=True)
    concurrency = Dict(key_trait=Unicode(), value_trait=CInt(), default_value={},
                       help="Requests a server takes at once, by base URL, e.g. {'http://localhost:8765/v1': 1} for "
                            "a server that serves one at a time: comparisons run that many of its columns at once "
                            "unless --concurrency is given.").tag(config=True)
    run_tools = Enum(["ask", "auto"], "ask",
                     help="--tools: ask before running each call the model makes (ask), or run them (auto)."
                     ).tag(config=True)
    max_tool_rounds = CInt(5, help="--tools: rounds of tool calls before the answer is given up as incomplete."
                           ).tag(config=True)
    local_context = CInt(4096, help="Context window (tokens) of the in-process local model.").tag(config=True)
    log = Bool(True, help="Write every run to the run log (%qwen_log); --no-log skips one cell.").tag(config=True)
    log_path = Unicode("", help="The run log's SQLite file; empty: $QWEN_MAGICS_LOG, else log.db in the user data "
                       "folder.").tag(config=True)
    cache = Bool(False, help="Answer a %%qwen cell identical to an earlier complete run from the run log, "
                 "sending nothing (as --cache does).").tag(config=True)
    display_mode = Enum(["auto", "notebook", "terminal"], "auto",
                        help="Where answers stream: rich notebook output, plain terminal text, or auto.").tag(config=True)

    @validate("temperature")
    def _valid_temperature(self, proposal: dict) -> float | None:
        return _as_trait_error(check_temperature, proposal["value"])

    @validate("top_p")
    def _valid_top_p(self, proposal: dict) -> float | None:
        return _as_trait_error(check_top_p, proposal["value"])

    @validate("presence_penalty")
    def _valid_presence_penalty(self, proposal: dict) -> float | None:
        return _as_trait_error(lambda value: check_penalties(value, None), proposal["value"])

    @validate("repetition_penalty")
    def _valid_repetition_penalty(self, proposal: dict) -> float | None:
        return _as_trait_error(lambda value: check_penalties(None, value), proposal["value"])

    @validate("concurrency")
    def _valid_concurrency(self, proposal: dict) -> dict[str, int]:
        for url, limit in proposal["value"].items():
            if limit < 1:
                raise TraitError(f"concurrency {limit} for {url} must be 1 or more")
        return {url.rstrip("/"): limit for url, limit in proposal["value"].items()}

    @validate("region")
    def _valid_region(self, proposal: dict) -> str:
        try:
            return find_region(proposal["value"]).name
        except InvalidInput as err:
            raise TraitError(str(err)) from None

    @validate("update_interval", "timeout", "connect_timeout")
    def _positive(self, proposal: dict) -> float:
        if proposal["value"] <= 0:
            raise TraitError(f"{proposal['trait'].name} must be positive")
        return proposal["value"]

    @validate("history_turns", "max_value_chars", "dataframe_rows", "max_retries", "local_context")
    def _not_negative(self, proposal: dict) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} must be zero or more")
        return proposal["value"]


_NAMES = frozenset(QwenSettings.class_trait_names(config=True))
"""The configurable values: every ``%config QwenMagics.<name>``."""


class ConfigView:
    """The ``%config QwenMagics`` values, read live: what the other magics and the widgets get of the configuration.

    Each read goes to the configured object, so ``%config QwenMagics.model =
    "qwen-flash"`` applies to the next run of every surface; a write (the
    panel's "Make these the %%qwen defaults") sets the trait, checked as
    ``%config`` checks it.  Only the configuration's traits can be read or
    written: nothing else of the object behind it.
    """

    __slots__ = ("_source",)

    def __init__(self, source: QwenSettings) -> None:
        object.__setattr__(self, "_source", source)

    def __getattr__(self, name: str) -> Any:
        if name in _NAMES:
            return getattr(object.__getattribute__(self, "_source"), name)
        raise AttributeError(f"the configuration has no {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _NAMES:
            raise AttributeError(f"the configuration has no {name!r}")
        setattr(self._source, name, value)

    def __dir__(self) -> list[str]:
        return sorted(_NAMES)

    def __repr__(self) -> str:
        return f"<the %config QwenMagics values: {', '.join(sorted(_NAMES))}>"


def _as_trait_error(check, value):
    try:
        check(value)
    except InvalidInput as err:
        raise TraitError(str(err)) from None
    return value
