"""The work of the secondary magics: ``%qwen_chat``, ``%qwen_models`` and ``%qwen_local``.

Each takes the magic's parsed arguments and prints or returns what the magic
shows; errors are :class:`~qwen_magics.errors.QwenMagicsError`, turned into
one line by the magic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from IPython.display import display

from . import runner
from .config import QwenSettings
from .conversation import Conversations, check_name
from .errors import InvalidInput
from .markdown import render_markdown
from .models import ModelTable, is_local, known, likely_typo
from .options import endpoint_for
from .request import Request


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


def models(settings: QwenSettings, args: argparse.Namespace) -> tuple[ModelTable, list[str] | None]:
    """The table of models, with what the endpoint lists (also returned, for typo checks), and a verdict on NAME."""
    from .backends.errors import translate
    from .backends.openai_chat import list_models

    endpoint = endpoint_for(settings, args.region, args.base_url, None)
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
        if args.name in (listed or ()) or known(args.name) or is_local(args.name):
            print(f"{args.name!r} is " + ("offered by " + where if args.name in (listed or ()) else "a known model"))
        elif guess := likely_typo(args.name, listed):
            print(f"{args.name!r} is neither known nor listed: did you mean {guess!r}?")
        else:
            print(f"{args.name!r} is neither known nor listed by {where}")
    return ModelTable(listed, where, settings.local_context, note, asked), listed


def local(args: argparse.Namespace) -> None:
    """Install, unload, or describe the in-process model."""
    from . import install_local, local_model

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
