"""Qwen's tokenizer, from the vocabulary the DashScope SDK ships.

The SDK carries Qwen's byte-level BPE vocabulary (``dashscope/resources/qwen.tiktoken``: 151,643 merges, the
ones every Qwen generation from Qwen1 to Qwen3 uses) and splits text before merging with the pattern below,
the pre-tokenizer of Qwen2's ``tokenizer.json``.  The file is read with ``tiktoken`` (a dependency of the SDK)
without importing the SDK itself, whose import takes seconds.  Nothing is downloaded; the vocabulary loads on
first use, once per process, and the counts agree with llama.cpp's tokenization of the Qwen2.5 GGUF
(tests/test_tokens.py).

Special tokens (``<|im_start|>`` ...) are never read from the text: a prompt that contains one is counted as
the plain text it is.
"""

from __future__ import annotations

import binascii
import importlib.util
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..errors import InvalidInput

if TYPE_CHECKING:
    import tiktoken

PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
           r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
"""How Qwen splits text into words before merging bytes (digits one by one, CJK runs as words)."""

TEMPLATE_PER_MESSAGE = 5
"""Tokens ChatML adds around each message: ``<|im_start|>``, the role, a newline, ``<|im_end|>``, a newline."""
TEMPLATE_REPLY = 3
"""Tokens that open the answer: ``<|im_start|>assistant`` and a newline."""

_FAMILIES = ("qwen", "qwq", "qvq", "local")
_lock = threading.Lock()
_encoding: "tiktoken.Encoding | None" = None


def vocabulary_file() -> Path:
    """The SDK's copy of Qwen's vocabulary (found without importing the SDK)."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or spec.origin is None:
        raise InvalidInput("Qwen's tokenizer needs the dashscope package, which ships Qwen's vocabulary",
                           "pip install dashscope")
    path = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise InvalidInput(f"The installed dashscope has no Qwen vocabulary ({path} is missing)",
                           "pip install -U dashscope")
    return path


def encoding() -> "tiktoken.Encoding":
    """Qwen's BPE, loaded on first use (about half a second) and kept for the process."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                import tiktoken

                parts = vocabulary_file().read_bytes().split()
                ranks = dict(zip(map(binascii.a2b_base64, parts[0::2]), map(int, parts[1::2])))
                _encoding = tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={})
    return _encoding


def check_model(model: str | None) -> None:
    """Refuse a model outside the Qwen family: its tokenizer is not this one."""
    if model is not None and not model.lower().startswith(_FAMILIES):
        raise InvalidInput(f"No tokenizer is known for {model!r}: this is Qwen's vocabulary",
                           "give a Qwen model (qwen-plus, qwen3-max, local, ...) or no model")


def _normal(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def token_ids(text: str, model: str | None = None) -> list[int]:
    """The ids of the tokens Qwen reads ``text`` as."""
    check_model(model)
    return encoding().encode_ordinary(_normal(text))


@dataclass(frozen=True)
class Piece:
    """One piece of text and the token ids it is made of (one id, or several where a character such as an
    emoji spans tokens)."""

    text: str
    ids: tuple[int, ...]


def pieces(text: str, model: str | None = None) -> list[Piece]:
    """The text as Qwen's tokens, in order; the pieces join to the text (in NFC form, as Qwen reads it).

    A token that holds part of a character's bytes is joined with the next until the character is whole, so
    every piece is readable text.
    """
    ids = token_ids(text, model)
    out: list[Piece] = []
    pending, held = b"", []
    for token, raw in zip(ids, encoding().decode_tokens_bytes(ids)):
        pending, held = pending + raw, [*held, token]
        try:
            piece = pending.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append(Piece(piece, tuple(held)))
        pending, held = b"", []
    if held:
        out.append(Piece(pending.decode("utf-8", "replace"), tuple(held)))
    return out


def tokenize(text: str, model: str | None = None) -> list[str]:
    """The token pieces of ``text`` (strings, in order, joining to the text)."""
    return [p.text for p in pieces(text, model)]


def count(text: str, model: str | None = None) -> int:
    """How many tokens Qwen reads ``text`` as."""
    return len(token_ids(text, model))


def count_many(texts: Iterable[str]) -> list[int]:
    """The token count of each text (one call into the tokenizer for all of them)."""
    return [len(ids) for ids in encoding().encode_ordinary_batch([_normal(t) for t in texts])]


def message_text(content: Any) -> str:
    """The text of a message's content (a string, or the text parts of a multimodal list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def template_tokens(messages: Sequence[Any]) -> int:
    """The tokens ChatML adds to a request of these messages (around each, and to open the answer)."""
    return TEMPLATE_PER_MESSAGE * len(messages) + TEMPLATE_REPLY


def count_messages(messages: Iterable[dict[str, Any]]) -> int:
    """The input tokens of a chat request: each message's text and ChatML's tokens around it, and the tokens
    that open the answer.  Images and videos are not counted (their tokens depend on the service)."""
    return count_conversations([list(messages)])[0]


def count_conversations(conversations: Sequence[Sequence[dict[str, Any]]]) -> list[int]:
    """:func:`count_messages` of each request's messages, counted in one call into the tokenizer."""
    counts = iter(count_many([message_text(m.get("content")) for c in conversations for m in c]))
    return [sum(next(counts) for _ in c) + template_tokens(c) for c in conversations]
