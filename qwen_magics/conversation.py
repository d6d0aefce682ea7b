"""Named conversations for ``--chat``: earlier turns, bounded.

Without ``--chat`` every cell is independent; with it, the cell's request
carries the conversation's earlier user and assistant turns.  Only complete
answers become turns, so an interrupted answer never confuses the next one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInput

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"Conversation name {name!r} is not allowed",
                           "use 1-64 letters, digits, '_', '.' or '-', e.g. --chat=notes")
    return name


@dataclass
class Conversation:
    """The turns of one conversation, oldest first."""

    name: str
    turns: list[tuple[Any, str]] = field(default_factory=list)

    def messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for user, assistant in self.turns:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return out

    def add(self, user: Any, assistant: str, keep: int) -> None:
        self.turns.append((user, assistant))
        del self.turns[: max(0, len(self.turns) - keep)]

    def transcript(self) -> str:
        lines = [f"Conversation {self.name!r}: {len(self.turns)} turn(s)"]
        for user, assistant in self.turns:
            lines += [f"\n**user:** {user}", f"\n**assistant:** {assistant}"]
        return "\n".join(lines)


class Conversations(dict):
    """Conversations by name, created on first use."""

    def get_or_create(self, name: str) -> Conversation:
        check_name(name)
        return self.setdefault(name, Conversation(name))
