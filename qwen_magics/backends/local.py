"""Local backend: a Qwen GGUF model run in-process by llama.cpp, streamed as events.

llama.cpp generates synchronously, so :func:`stream` runs it in a worker
thread that hands events to the package's event loop through an asyncio queue,
and the kernel stays responsive.  The worker hands tokens over in batches: the
first at once, then no more often than the consumer shows them (the driver's
pace, :data:`~qwen_magics.events.consumer_pace`; at the end only when it shows
nothing before).  Waking the loop's thread per token would make llama.cpp's
compute threads, which spin-synchronise, wait for it on a small machine.

The prompt is formatted here with the chat template stored in the GGUF file
(the same formatter ``create_chat_completion`` uses) and tokenized once, so the
context check happens before any work and the input count is exactly the
tokens evaluated.  Tokens come from ``Llama.generate`` one at a time, and this
loop does what ``create_completion`` would around it: it ends the turn at an
end-of-generation token (not output), cuts the chat template's and the
request's stop strings (output), holds back a character split across tokens,
stops at ``max_tokens`` or the end of the context, and counts the output.
Owning the loop buys two things: generation ends at the next token once the
consumer has gone, and ``--logprobs`` reads each token's alternatives from the
logits it was sampled from (:class:`_Alternatives`), without asking llama.cpp
to keep the logits of every position.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from ..events import Event, Finished, Started, TextDelta, TokenLogprob, Usage, consumer_pace
from ..errors import LocalModelError
from ..local.model import LoadedModel, import_llama_cpp, known_model, load, resolve
from ..request import Request
from .common import guarded

_JOIN_TIMEOUT = 10.0
_DONE = object()
# create_chat_completion's defaults, used where the request leaves a setting unset.
_DEFAULTS = {"temp": 0.2, "top_p": 0.95, "top_k": 40, "presence_penalty": 0.0, "repeat_penalty": 1.0}
# The samplers a request names are the only ones applied: llama.cpp's min_p (0.05 unless told otherwise,
# a cut Model Studio has no setting for) would keep a high temperature from reaching unlikely tokens, so a
# temperature sweep on the local model would show less than the same sweep on the service.
_OFF = {"min_p": 0.0}

Emit = Callable[[Any], None]


def stream(request: Request) -> AsyncIterator[Event]:
    """Answer ``request`` with a local model in a worker thread; closing or cancelling the consumer stops it.

    The context window is ``request.endpoint.context`` (``QwenMagics.local_context``).  Every failure is
    a :class:`LocalModelError`.
    """
    return guarded(request, _events)


async def _events(request: Request) -> AsyncIterator[Event]:
    _check(request)
    path = await asyncio.to_thread(resolve, request.model)  # re-hashes only a file whose stamp is stale
    model = await asyncio.to_thread(load, path, n_ctx=request.endpoint.context)
    queue: asyncio.Queue[list[Any]] = asyncio.Queue()
    cancelled = threading.Event()
    handover = _Handover(asyncio.get_running_loop(), queue, cancelled, consumer_pace.get())
    worker = threading.Thread(target=_run, args=(model, request, cancelled, handover.emit), name="qwen-local",
                              daemon=True)
    worker.start()
    try:
        while True:
            try:
                batch = await queue.get()
            except asyncio.CancelledError:
                # Stopped: the worker ends at its next token and counts what it generated; that text and
                # the counts are handed on before the cancellation goes on, so a stopped answer keeps both.
                cancelled.set()
                await asyncio.to_thread(worker.join, _JOIN_TIMEOUT)
                for item in _left_over(queue):
                    yield item
                raise
            for item in batch:
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        cancelled.set()
        await asyncio.to_thread(worker.join, _JOIN_TIMEOUT)


def _left_over(queue: asyncio.Queue) -> list[Any]:
    """The events still queued (the worker has ended): text and counts, not the end marker or an error."""
    items = []
    while not queue.empty():
        items += [item for item in queue.get_nowait() if item is not _DONE and not isinstance(item, BaseException)]
    return items


class _Handover:
    """Worker thread → event loop, in batches: the first text at once, then every ``interval`` seconds.

    Anything but a token (start, usage, finish, an error, the end) is handed
    over at once, with whatever tokens wait before it.  ``interval`` None:
    tokens wait for the next such item.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, cancelled: threading.Event,
                 interval: float | None) -> None:
        self.loop, self.queue, self.cancelled, self.interval = loop, queue, cancelled, interval
        self.batch: list[Any] = []
        self.last = float("-inf")
        self.texts = 0

    def emit(self, item: Any) -> None:
        self.batch.append(item)
        if isinstance(item, TextDelta):
            self.texts += 1
        elif isinstance(item, TokenLogprob):
            pass
        else:
            self.flush()
            return
        if self.texts == 1 or (self.interval is not None and time.monotonic() - self.last >= self.interval):
            self.flush()

    def flush(self) -> None:
        batch, self.batch, self.last = self.batch, [], time.monotonic()
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, batch)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()


def _check(request: Request) -> None:
    if request.thinking:
        raise LocalModelError("The local Qwen2.5-Coder models have no thinking mode",
                              "Turn thinking off for local models", code="unsupported")


@contextlib.contextmanager
def _runtime_errors() -> Iterator[None]:
    """A runtime failure becomes one clear line (the cause chained), whichever thread it happens in."""
    try:
        yield
    except LocalModelError:
        raise
    except Exception as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise LocalModelError(f"Local generation failed: {first_line}",
                              "Run it again; if it repeats, restart the kernel", code="runtime_error") from exc


def _run(model: LoadedModel, request: Request, cancelled: threading.Event, emit: Emit) -> None:
    """Worker thread: one generation at a time per model; every outcome goes through ``emit``."""
    try:
        with model.lock, _runtime_errors():
            if not cancelled.is_set():
                _generate(model, request, cancelled, emit)
    except LocalModelError as exc:  # must reach the consumer, not die with the thread
        emit(exc)
    finally:
        emit(_DONE)


def _generate(model: LoadedModel, request: Request, cancelled: threading.Event, emit: Emit) -> None:
    llama_cpp = import_llama_cpp()
    llm = model.llm
    llm.reset()  # otherwise the prompt cache shifts the numbers and a seed stops reproducing
    prompt, template_stop = _prompt_tokens(llama_cpp, llm, request.messages)
    room = model.n_ctx - len(prompt)
    if room <= 0:
        raise LocalModelError(f"The prompt is {len(prompt)} tokens but the local context holds {model.n_ctx}",
                              "Shorten the prompt or raise the context size", code="context_length")
    known = known_model(model.path)
    emit(Started(model=known.title if known else llm.metadata.get("general.name") or model.path.name))
    budget = min(request.sampling.max_tokens or room, room)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    alternatives = _Alternatives(llama_cpp, llm, request.logprobs) if request.logprobs else None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    scanner = _StopScanner([*request.sampling.stop, *template_stop])
    llm.set_seed(llama_cpp.LLAMA_DEFAULT_SEED if request.sampling.seed is None else request.sampling.seed)
    tokens = llm.generate(prompt, grammar=_grammar(llama_cpp, request), **_sampling(request))
    reason: str | None = None
    output = 0
    try:
        for token in tokens:
            if cancelled.is_set():  # stopped: what was generated is still counted (see _events)
                emit(Usage(input=len(prompt), output=output))
                return
            if llama_cpp.llama_vocab_is_eog(vocab, token):  # the end of turn: sampled, but not output
                reason = "stop"
                break
            output += 1
            piece = decoder.decode(llm.detokenize([token]))
            if alternatives is not None:  # read now: the next step overwrites the context's logits
                emit(alternatives.entry(token, piece))
            text, matched = scanner.feed(piece)
            if text:
                emit(TextDelta(text))
            if matched:
                reason = "stop"
                break
            if output >= budget:
                reason = "length"
                break
    finally:
        tokens.close()
    if reason is None:
        raise LocalModelError("llama.cpp ended the answer without a finish reason", "Run it again", code="cut")
    # After a stop string nothing more is shown; otherwise the held-back tail, and a character cut short as "�".
    if not scanner.matched and (text := scanner.flush() + decoder.decode(b"", final=True)):
        emit(TextDelta(text))
    emit(Usage(input=len(prompt), output=output))
    emit(Finished(reason))


class _Alternatives:
    """Log-probabilities of a sampled token and of the ``k`` likeliest, and the entropy of the whole
    distribution, from the last position's logits only.

    Right after a token is sampled the context still holds the logits it was
    drawn from (raw: the sampler works on a copy), so nothing needs llama.cpp to
    keep every position's logits, which slows generation several times.  Tokens
    are named as llama.cpp's own completion logprobs name them (special tokens
    as empty text), and the sampled token is listed among the top even when it
    is not one of the ``k``.
    """

    def __init__(self, llama_cpp: Any, llm: Any, k: int) -> None:
        self.llama_cpp, self.llm, self.k, self.n_vocab = llama_cpp, llm, k, llm.n_vocab()

    def entry(self, token: int, text: str) -> TokenLogprob:
        import numpy as np

        pointer = self.llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        peak = float(logits.max())
        shifted = logits - peak
        weights = np.exp(shifted)
        total = float(weights.sum(dtype=np.float64))
        log_total = peak + math.log(total)
        # Entropy of the whole distribution, in bits: log Z - E[logit - peak], from the same exponentials.
        entropy = (math.log(total) - float(np.dot(weights, shifted)) / total) / math.log(2)
        top = np.argpartition(logits, -self.k)[-self.k:] if self.k < self.n_vocab else np.arange(self.n_vocab)
        ids = {int(i) for i in top} | {token}
        ranked = sorted(((self._name(i), float(logits[i]) - log_total) for i in ids), key=lambda p: -p[1])
        return TokenLogprob(text, float(logits[token]) - log_total, tuple(ranked), max(0.0, entropy))

    def _name(self, token: int) -> str:
        return self.llm.detokenize([token]).decode("utf-8", errors="ignore")


def _prompt_tokens(llama_cpp: Any, llm: Any, messages: Sequence[dict[str, Any]]) -> tuple[list[int], list[str]]:
    """Apply the GGUF file's own chat template and tokenize it as the chat handler would."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise LocalModelError("This GGUF file has no chat template", "Use an instruct model that carries one",
                              code="no_template")
    formatter = _formatter(template, _token_text(llm, llm.token_eos()), _token_text(llm, llm.token_bos()))
    try:
        result = formatter(messages=list(messages))
    except Exception as exc:  # the template's raise_exception() and Jinja errors alike
        raise LocalModelError(f"The model's chat template rejected the messages: {exc}",
                              "Send OpenAI-style messages with string content", code="template_error") from exc
    tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
    return tokens, stops


@functools.lru_cache(maxsize=4)
def _formatter(template: str, eos: str, bos: str) -> Any:
    """Compile each template once: the Qwen one is large."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)


def _token_text(llm: Any, token: int) -> str:
    return llm.detokenize([token], special=True).decode("utf-8", errors="ignore") if token >= 0 else ""


def _sampling(request: Request) -> dict[str, Any]:
    """Request settings as ``Llama.generate``'s keywords, min_p off; temperature 0 selects its greedy sampler."""
    sampling = request.sampling
    settings = {"temp": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k,
                "presence_penalty": sampling.presence_penalty, "repeat_penalty": sampling.repetition_penalty}
    return {key: _DEFAULTS[key] if value is None else value for key, value in settings.items()} | _OFF


def _grammar(llama_cpp: Any, request: Request) -> Any:
    fmt = request.response_format
    if fmt is None:
        return None
    if fmt["type"] == "json_schema":
        return llama_cpp.LlamaGrammar.from_json_schema(json.dumps(fmt["json_schema"]["schema"]), verbose=False)
    return llama_cpp.LlamaGrammar.from_string(llama_cpp.llama_grammar.JSON_GBNF, verbose=False)


class _StopScanner:
    """Cuts the text at the first stop string, holding back any tail that may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.matched = False

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that is safe to show now, and whether a stop string has been reached."""
        if not self.stops:
            return text, False
        self.pending += text
        cuts = [i for s in self.stops if (i := self.pending.find(s)) >= 0]
        if cuts:
            self.matched = True
            out, self.pending = self.pending[:min(cuts)], ""
            return out, True
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
