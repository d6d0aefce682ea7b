"""SDK and transport exceptions, translated into errors a person can act on.

Shared by every backend that talks HTTP, so the same failure reads the same
whichever protocol was used.  Messages name the status and the service's error
code (never the key) and say what to do next.
"""

from __future__ import annotations

import json
from typing import Any

from .. import errors as e
from ..request import Request


def translate(err: BaseException, request: Request, midstream: bool = False) -> e.QwenMagicsError:
    """The :class:`~qwen_magics.errors.QwenMagicsError` for an exception raised while streaming.

    ``midstream``: part of the answer had arrived, so a dropped connection is
    a cut stream rather than an unreachable endpoint.
    """
    if isinstance(err, e.QwenMagicsError):
        return err
    import openai

    where = request.endpoint.region or request.endpoint.base_url
    retries = request.endpoint.max_retries
    if isinstance(err, openai.APIStatusError):
        return from_status(err.status_code, _code(err.body), _message(err), request,
                           retry_after=retry_after(err.response.headers))
    if isinstance(err, (openai.APITimeoutError, TimeoutError)):  # TimeoutError: asyncio/aiohttp (dashscope SDK)
        return e.TimedOut(f"No answer from {where} within {request.endpoint.timeout:g} s",
                          "the partial answer is kept; try again, or raise --timeout / %config QwenMagics.timeout")
    if isinstance(err, openai.APIConnectionError) or type(err).__module__.startswith("aiohttp"):
        if midstream:
            return e.StreamCut("The connection dropped in the middle of the answer",
                               "the partial answer is kept; run the cell again")
        return e.ConnectionFailed(f"Could not reach {request.endpoint.base_url}{_after(retries)}",
                                  "check the network, --region or --base-url, and run the cell again")
    if isinstance(err, openai.APIError):  # an error object inside the stream
        return from_status(None, _code(err.body), _message(err), request)
    if isinstance(err, json.JSONDecodeError):
        return e.ServerError("The service sent a malformed stream event", "the partial answer is kept; run the cell again")
    return e.QwenMagicsError(f"Unexpected error: {type(err).__name__}: {err}", "run the cell again; if it persists, report it")


def from_status(status: int | None, code: str | None, message: str, request: Request,
                retry_after: float | None = None) -> e.QwenMagicsError:
    """Map an HTTP status and service error code (compatible or native) to one clear error.

    ``retry_after``: the seconds the response's headers asked to wait (see :func:`retry_after`).
    """
    tag = " ".join(str(x) for x in (status, code) if x)
    tag = f" ({tag})" if tag else ""
    model, region = request.model, request.endpoint.region
    low = (code or "").lower().replace("_", "").replace(".", "")  # data_inspection_failed ~ DataInspectionFailed
    kw = {"status": status, "code": code, "retry_after": retry_after}
    if "datainspection" in low:
        # An error inside a stream has no status (compatible mode) or says "Output data ..." (native, 400);
        # a batch's error line has no status either, and says "Input data ..." when the prompt was refused.
        said = message.lower()
        answer = said.startswith("output") or (not status and not said.startswith("input"))
        return e.ContentBlocked(f"Content moderation refused the {'answer' if answer else 'input'}{tag}",
                                "rephrase the prompt; sending the same text again will not help", **kw)
    if status == 401 or "invalidapikey" in low:
        where = f"the {region} region" if region else request.endpoint.base_url
        return e.AuthenticationFailed(f"The API key was rejected by {where}{tag}",
                                      f"check {request.endpoint.api_key_env}; keys are region-specific, "
                                      "so pass --region for the key's region", **kw)
    if status == 404 or "notfound" in low:
        return e.ModelNotFound(f"Model {model!r} is not available{f' in {region}' if region else ''}{tag}",
                               "check the model name, or pick another --region", **kw)
    if status == 403 or "accessdenied" in low:
        return e.PermissionDenied(f"Access to {model!r} was denied{tag}",
                                  "enable the model for your account or workspace in the Model Studio console", **kw)
    if ("quota" in low and "throttling" not in low) or "arrearage" in low:  # Throttling.RateQuota is a rate limit
        return e.QuotaExceeded(f"The account has no quota left{tag}",
                               "check billing in the Model Studio console; retrying will not help", **kw)
    if status == 429 or "throttling" in low or "limitrequests" in low:
        return e.RateLimited(f"Rate limited{tag}{_after(request.endpoint.max_retries)}",
                             "wait a minute and run the cell again, or raise %config QwenMagics.max_retries", **kw)
    if (status is not None and status >= 500) or (status is None and "internalerror" in low):
        return e.ServerError(f"Model Studio had a server error{tag}{_after(request.endpoint.max_retries)}",
                             "try again shortly", **kw)
    if status == 400 or "invalidparameter" in low:
        return e.BadRequest(f"The request was rejected{tag}: {message}", "fix the option it names and run again", **kw)
    return e.QwenMagicsError(f"The service reported an error{tag}: {message}", "run the cell again", **kw)


def retry_after(headers: Any) -> float | None:
    """The wait a response's headers ask for, in seconds: ``retry-after-ms``, else ``Retry-After`` in seconds.

    An HTTP date, a negative or an unreadable value counts as none given; a wait
    is taken as at most a minute (a longer one is better left to the person).
    """
    if not headers:
        return None
    lowered = {str(name).lower(): value for name, value in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            seconds = float(lowered[name]) * scale
        except (KeyError, TypeError, ValueError):
            continue
        if seconds >= 0:
            return min(seconds, 60.0)
    return None


def worth_retrying(error: e.QwenMagicsError) -> bool:
    """Whether sending the same request again may succeed: a rate limit, a server error, a timeout, no connection."""
    return isinstance(error, (e.RateLimited, e.ServerError, e.TimedOut, e.ConnectionFailed))


def _code(body: object) -> str | None:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("code"):
            return str(inner["code"])
    return None


def _message(err: BaseException) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(err, "message", err))


def _after(retries: int) -> str:
    return f" after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
