"""The work of the secondary magics: ``%qwen_chat``, ``%qwen_models``, ``%qwen_local`` and ``%qwen_log``.

Each takes the magic's parsed arguments and prints or returns what the magic
shows; errors are :class:`~qwen_magics.errors.QwenMagicsError`, turned into
one line by the magic.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Mapping

from IPython.display import display

from .. import runner
from ..options.config import ConfigView
from ..conversation import Conversations, check_name
from ..errors import InvalidInput
from ..display.markdown import render_markdown
from ..models import ModelTable, is_local, known, likely_typo
from ..options.build import endpoint_for
from ..runlog.recorder import Recorder
from ..request import Request

_NAMES_SHOWN = 5  # models of another server named when a NAME is not among them
_READ_WAIT = 2.0  # seconds %qwen_log waits for runs still being written, so the last cell's run is listed


def chat(conversations: Conversations, args: argparse.Namespace) -> None:
    """List, show or reset conversations."""
    check_name(args.name)
    if args.action == "reset":
        if args.all:
            conversations.clear()
        else:
            conversations.pop(args.name, None)
        print("All conversations reset." if args.all else f"Conversation {args.name!r} reset.")
    elif args.action == "show":
        if args.name not in conversations:
            raise InvalidInput(f"No conversation {args.name!r}", f"start one with %%qwen -c {args.name}")
        text = conversations[args.name].transcript()
        display({"text/plain": text, "text/html": render_markdown(text)}, raw=True)
    elif not conversations:
        print("No conversations yet: start one with %%qwen -c NAME")
    else:
        for name, conv in conversations.items():
            print(f"{name}: {len(conv.turns)} turn(s)")


def models(settings: ConfigView, args: argparse.Namespace) -> tuple[ModelTable, list[str] | None]:
    """The table of models, with what the endpoint lists (also returned, for typo checks), and a verdict on NAME.

    A server that is not Model Studio (a base URL) gets its own list alone: the catalogue is not its to offer.
    """
    from ..backends.errors import translate
    from ..backends.openai_chat import list_models

    endpoint = endpoint_for(settings, args.region, args.base_url, None)
    catalogue = endpoint.region is not None
    where = endpoint.region or endpoint.base_url
    listed, note = None, None
    asked = not (endpoint.key_required and endpoint.api_key() is None)
    if not asked:
        note = f"set {settings.api_key_env} to ask it"
    else:
        try:
            listed = runner.call(list_models(endpoint), timeout=endpoint.timeout + endpoint.connect_timeout)
        except Exception as err:  # noqa: BLE001 - the table is still worth showing, with the reason
            note = translate(err, Request(messages=(), model="", endpoint=endpoint)).line()
    if args.name:
        print(_verdict(args.name, listed, where) if catalogue else _server_verdict(args.name, listed, where, note))
    return ModelTable(listed, where, settings.local_context, note, asked, catalogue, settings.prices), listed


def _verdict(name: str, listed: list[str] | None, where: str) -> str:
    """Whether Model Studio offers ``name``, knows it, or it is a likely typo."""
    if name in (listed or ()) or known(name) or is_local(name):
        return f"{name!r} is " + ("offered by " + where if name in (listed or ()) else "a known model")
    if guess := likely_typo(name, listed):
        return f"{name!r} is neither known nor listed: did you mean {guess!r}?"
    return f"{name!r} is neither known nor listed by {where}"


def _server_verdict(name: str, listed: list[str] | None, where: str, note: str | None) -> str:
    """Whether another server lists ``name`` (checked against its list only)."""
    if listed is None:
        return f"{name!r} could not be checked: {where} did not list its models ({note})"
    if name in listed:
        return f"{name!r} is offered by {where}"
    if guess := likely_typo(name, listed, catalogue=False):
        return f"{name!r} is not listed by {where}: did you mean {guess!r}?"
    shown = ", ".join(listed[:_NAMES_SHOWN]) + (", …" if len(listed) > _NAMES_SHOWN else "")
    return f"{name!r} is not listed by {where}; it lists: {shown or 'nothing'}"


def local(args: argparse.Namespace) -> None:
    """Install, unload, or describe the in-process model."""
    from ..local import install as install_local, model as local_model

    if args.action == "install":
        install_local.install(args.model)
    elif args.action == "unload":
        count = len(local_model.loaded())
        local_model.unload()
        print(f"Unloaded {count} local model(s).")
    else:
        print(local_status(local_model.loaded(), local_model.default_model()))


def local_status(loaded: list[dict], default) -> str:
    """One line per loaded model, or where the default one stands."""
    if not loaded:
        where = "installed" if default.path.exists() else "not installed (run %qwen_local install)"
        return f"No local model loaded; the default is {default.title}, {where}. It loads on first use (-m local)."
    return "\n".join(f"{Path(m['file']).name}: {m['size'] / 2**20:,.0f} MiB, {m['threads']} threads, "
                     f"context {m['context']:,} tokens{', logits on' if m['logits_all'] else ''}" for m in loaded)


def run_log(recorder: Recorder, args: argparse.Namespace, prices: Mapping[str, Any]) -> Any:
    """List, search, show, total, export or delete logged runs; what the magic returns, if anything."""
    from ..runlog.view import ShownRun, cost_table, runs_table
    from ..tokens.prices import Price

    log = recorder.log()
    log.flush(_READ_WAIT)
    if args.action == "path":
        print(log.path)
    elif args.action == "show":
        record = log.get(_run_id(args, "show"))
        if record is None:
            raise InvalidInput(f"No run with id {args.id!r} in the log", "%qwen_log lists the runs and their ids")
        price = prices.get(record.model)
        return ShownRun(record, Price.flat(price[0], price[1]) if price else None)
    elif args.action == "df":
        return log.to_dataframe()
    elif args.action == "cost":
        since = f" since {args.since}" if args.since else ""
        return cost_table(log.cost(args.since, prices=prices), f"Runs and tokens per model and day{since} ({log.path})")
    elif args.action == "rm":
        if args.before is not None:
            if args.id:
                raise InvalidInput("%qwen_log rm takes an id or --before DATE, not both", "give one of them")
            print(f"Deleted {log.delete_before(args.before)} run(s) started before {args.before}.")
        elif log.delete(_run_id(args, "rm")):
            print(f"Deleted run {args.id}.")
        else:
            raise InvalidInput(f"No run with id {args.id!r} in the log", "%qwen_log lists the runs and their ids")
    else:
        if args.n < 1:
            raise InvalidInput(f"-n {args.n} is not a number of runs", "give 1 or more, e.g. %qwen_log -n 50")
        records = log.search(args.query, args.n) if args.query else log.recent(args.n)
        which = f"matching {args.query!r}" if args.query else "latest"
        title = (f"{len(records)} {which} run(s) in {log.path}" if records
                 else f"No runs {which} in {log.path}" if args.query else f"No runs logged yet in {log.path}")
        return runs_table(records, title)
    return None


def _run_id(args: argparse.Namespace, action: str) -> str:
    if not (args.id or "").strip():
        raise InvalidInput(f"%qwen_log {action} needs a run id",
                           f"write e.g. %qwen_log {action} 1a2b3c4d (%qwen_log lists the ids)")
    return args.id
