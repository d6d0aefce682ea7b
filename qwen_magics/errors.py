"""Errors a user can act on.

Every failure becomes one :class:`QwenMagicsError`: a one-line ``message`` that
names the cause and a ``hint`` that names the fix.  Backends raise them (chained
``from`` the SDK's exception); only the magics (:mod:`qwen_magics.magics`) turn
them into IPython's ``UsageError``, so the notebook shows one line instead of a
traceback.
"""

from __future__ import annotations

import os
import re
from typing import Callable

_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9*._-]{2,}")


def redact(text: str, key_env: str = "DASHSCOPE_API_KEY") -> str:
    """Remove the API key, or anything shaped like one, from text bound for a person."""
    return redactor(key_env)(text)


def redactor(*key_envs: str) -> Callable[[str], str]:
    """:func:`redact` for many texts: the keys named by ``key_envs`` are read from the environment once."""
    keys = [key for key in (os.environ.get(env) for env in key_envs or ("DASHSCOPE_API_KEY",))
            if key and len(key) >= 4]

    def clean(text: str) -> str:
        for key in keys:
            if key in text:
                text = text.replace(key, "***")
        return _KEYLIKE.sub("sk-***", text) if "sk-" in text else text

    return clean


def _one_line(text: str) -> str:
    """Text bound for the one-line message: line breaks (from a service's or an exception's text) become spaces."""
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip() if "\n" in text or "\r" in text else text


class QwenMagicsError(Exception):
    """Base class: ``str(err)`` is the single line the user sees."""

    def __init__(self, message: str, hint: str = "", *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        self.message = redact(_one_line(message))
        self.hint = _one_line(hint)
        self.status = status
        self.code = code
        self.retry_after = retry_after
        """Seconds the service asked to wait before trying again (its Retry-After), where it said."""
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.message}. {self.hint[:1].upper()}{self.hint[1:]}." if self.hint else self.message


class InvalidInput(QwenMagicsError):
    """Input that can be checked before anything is sent."""


class MissingKey(QwenMagicsError):
    """No API key in the environment."""


def missing_key(env: str, region: str | None) -> MissingKey:
    """The error for a request that needs a key when none is set."""
    return MissingKey(
        f"No API key: {env} is not set",
        f"create a Model Studio key for {region or 'your region'} (keys are region-specific; --region picks another) "
        f"and set {env} in the environment before starting Jupyter (or run "
        f"import os, getpass; os.environ['{env}'] = getpass.getpass()); to answer offline instead, "
        f"use -m local after `qwen-magics install-local`",
    )


class AuthenticationFailed(QwenMagicsError):
    """401: wrong key, or a key from another region."""


class PermissionDenied(QwenMagicsError):
    """403: the model is not enabled for this account or workspace."""


class ModelNotFound(QwenMagicsError):
    """404: no such model at this endpoint."""


class BadRequest(QwenMagicsError):
    """400: the service rejected a parameter."""


class ContentBlocked(QwenMagicsError):
    """Content moderation refused the input or the output."""


class RateLimited(QwenMagicsError):
    """429 after the retries ran out."""


class QuotaExceeded(QwenMagicsError):
    """The account has no quota left; retrying will not help."""


class ServerError(QwenMagicsError):
    """5xx after the retries ran out."""


class TimedOut(QwenMagicsError):
    """No byte arrived within the timeout."""


class ConnectionFailed(QwenMagicsError):
    """The endpoint could not be reached."""


class StreamCut(QwenMagicsError):
    """The stream ended without a finish reason: the connection dropped."""


def stream_cut(how: str) -> StreamCut:
    """The error for a stream that ended ``how`` (e.g. "without a finish reason"): the connection dropped."""
    return StreamCut(f"The stream ended {how}: the connection dropped", "the partial answer is kept; run the cell again")


class LocalModelError(QwenMagicsError):
    """The local runtime or model file is missing, damaged, or cannot take the request."""

    def __init__(self, message: str, hint: str = "", *, code: str | None = None) -> None:
        super().__init__(message, hint, code=code)


class OutputFormatError(QwenMagicsError):
    """The answer was not in the format asked for (e.g. invalid JSON)."""


class ToolApprovalUnavailable(QwenMagicsError):
    """``--tools`` in a front end that cannot ask the user (no stdin): nothing is run."""

    def __init__(self, call: str) -> None:
        super().__init__(f"The model wants to run {call}, but this front end cannot ask you first",
                         "allow tool calls with -y, or %config QwenMagics.run_tools = 'auto'")
