"""The lab: a local llama.cpp model continued one token at a time, over its whole next-token distribution.

The model computes the logits of the last position once per token taken;
the lab copies them (151,936 floats) and every view of them, the settings'
reshaping included, is numpy on that copy, with no model call (see
:mod:`.shape`).  The lab shares the process's one loaded model with the local
backend: each model call holds the model's lock, so a generation and a lab step
never interleave, and before each call the lab makes the model's context hold
its own tokens again (reusing the longest common prefix, as llama.cpp's
``generate`` does), since a generation or another lab may have used it since.

:meth:`Lab.back` truncates the context; the logits of the last
:data:`_KEPT_LOGITS` positions are kept, so going back shows the very
distribution shown before without a model call.  Restoring a saved state
(``Llama.save_state``/``load_state``) would copy the whole context instead.

Model calls run in a short-lived thread, as the local backend's generations
do: llama.cpp's CPU backend gives every thread that calls it an OpenMP team,
and a team made by the kernel's main thread, which lives as long as the kernel,
slows every later generation in other threads by about a third.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import InvalidInput, LocalModelError
from ..local.model import LoadedModel, import_llama_cpp, load, resolve
from .shape import Settings, Shaped, Stage, penalise, shape

_KEPT_LOGITS = 32
_BUSY_WAIT = 600.0  # seconds a lab call waits for a generation on the same model to end


@dataclass(frozen=True)
class Taken:
    """A token the lab took: the model's probability of it, the settings' probability, its rank in the
    model's distribution (1 = most likely), and how it was chosen ("sampled", "greedy" or "chosen")."""

    id: int
    piece: str
    probability: float
    shaped: float
    rank: int
    how: str
    ends: bool = False
    """An end-of-generation token: nothing follows it."""


class Lab:
    """Continue ``prompt`` on ``model`` one token at a time (see :func:`open_lab`)."""

    def __init__(self, model: LoadedModel, prompt: str, *, chat: bool = False, seed: int | None = None,
                 settings: Settings | None = None) -> None:
        self.model, self.prompt, self.chat = model, prompt, chat
        self.llama_cpp = import_llama_cpp()
        llm = model.llm
        self.n_vocab = llm.n_vocab()
        self._vocab = self.llama_cpp.llama_model_get_vocab(llm.model)
        self.settings = settings or Settings()
        self.seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._prompt_ids = _prompt_ids(llm, prompt, chat)
        if not self._prompt_ids:
            raise InvalidInput("The lab's prompt is empty", "Give the text the model should continue")
        if len(self._prompt_ids) >= model.n_ctx:
            raise LocalModelError(f"The prompt is {len(self._prompt_ids)} tokens but the local context holds "
                                  f"{model.n_ctx}", "Shorten the prompt or raise the context size",
                                  code="context_length")
        self.taken: list[Taken] = []
        self.calls = 0
        """Model evaluations so far (the prompt, each token taken, a position re-evaluated): views make none."""
        self._logits: dict[int, np.ndarray] = {}  # tokens evaluated after the prompt -> that position's logits
        self._shaped: tuple[Any, Shaped] | None = None
        self._moves = 0  # steps and backs so far: a new position (or history) whenever it changes
        self._logits[0] = self._call(self._prompt_ids)

    # --- what the distribution is -------------------------------------------------------------
    @property
    def logits(self) -> np.ndarray:
        """The model's logits for the next token (float32, one per vocabulary entry)."""
        return self._logits[self._position]

    @property
    def _position(self) -> int:
        """Tokens taken after the prompt whose logits follow (an end-of-text token has none)."""
        return len(self.taken) - int(self.ended)

    @property
    def history(self) -> list[int]:
        """The tokens the lab took: what the penalties count (llama-cpp-python's sampler sees only these)."""
        return [t.id for t in self.taken]

    def shaped(self) -> Shaped:
        """The chain of the current settings over the current logits (computed once per position and settings)."""
        key = (self._moves, self.settings)
        if self._shaped is None or self._shaped[0] != key:
            self._shaped = (key, shape(self.logits, self.history, self.settings))
        return self._shaped[1]

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The sampler's stages in llama.cpp's order, each with what it kept and removed."""
        return self.shaped().stages

    def probabilities(self, shaped: bool = True) -> np.ndarray:
        """Probability of every vocabulary entry (float64): the settings' or, ``shaped=False``, the model's."""
        result = self.shaped()
        return result.probs if shaped else result.raw

    def distribution(self, shaped: bool = True) -> list[tuple[str, float]]:
        """``(piece, probability)`` of every token with probability > 0, most likely first."""
        probs = self.probabilities(shaped)
        ids = np.nonzero(probs > 0)[0]
        ids = ids[np.argsort(-probs[ids], kind="stable")]
        return [(self.piece(int(i)), float(probs[i])) for i in ids]

    def top(self, n: int = 10, shaped: bool = True) -> list[tuple[int, float]]:
        """The ``n`` likeliest ``(id, probability)`` (of the settings' or the model's distribution)."""
        probs = self.probabilities(shaped)
        n = min(n, len(probs))
        part = np.argpartition(-probs, n - 1)[:n]
        return [(int(i), float(probs[i])) for i in part[np.argsort(-probs[part], kind="stable")]]

    def entropy(self, shaped: bool = True) -> float:
        """Entropy in bits of the settings' (or, ``shaped=False``, the model's) distribution."""
        result = self.shaped()
        return result.entropy if shaped else result.raw_entropy

    def choices(self, shaped: bool = True) -> float:
        """The effective number of choices, 2 ** entropy."""
        return 2.0 ** self.entropy(shaped)

    def rank(self, token: int) -> int:
        """1 for the model's most likely next token, 2 for the next, ..."""
        logits = self.logits
        return int((logits > logits[token]).sum()) + 1

    def piece(self, token: int) -> str:
        """The text of one token (special tokens by name, a partial UTF-8 character as "�")."""
        return _pieces(self.model)[token]

    # --- settings --------------------------------------------------------------------------------
    def set(self, **settings: Any) -> Lab:
        """Change settings: temperature, top_k, typical_p, top_p, min_p, repetition, frequency, presence.

        None switches a stage off.  No model call: the next view re-shapes the same logits.
        """
        self.settings = self.settings.changed(**settings)
        return self

    # --- moving ----------------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        """The last token taken ends generation (an end-of-turn or end-of-text token)."""
        return bool(self.taken) and self.taken[-1].ends

    @property
    def room(self) -> int:
        """Tokens the context can still take."""
        return self.model.n_ctx - len(self._prompt_ids) - len(self.taken)

    def step(self, token: int | str | None = None, *, how: str = "chosen") -> str:
        """Take ``token`` (a piece or an id), or draw one with the settings; evaluate it; return its piece.

        ``how`` names a given token's choice in :attr:`taken` (a drawn one is "sampled" or "greedy").
        """
        if self.ended:
            raise InvalidInput(f"The text has ended with {self.taken[-1].piece!r}",
                               "Call back() to undo that token, or open a new lab")
        if self.room <= 1:
            raise LocalModelError(f"The local context of {self.model.n_ctx} tokens is full",
                                  "Call back(), or open a new lab with a shorter prompt", code="context_length")
        result = self.shaped()
        if token is None:
            chosen, how = self._draw(result, self._rng), "greedy" if self.settings.greedy else "sampled"
        else:
            chosen = self._token_id(token)
        ends = bool(self.llama_cpp.llama_vocab_is_eog(self._vocab, chosen))
        taken = Taken(chosen, self.piece(chosen), float(result.raw[chosen]), float(result.probs[chosen]),
                      self.rank(chosen), how, ends)
        if ends:  # nothing follows: the view stays here
            self.taken.append(taken)
            self._moves += 1
            return taken.piece
        logits = self._call([*self._prompt_ids, *self.history, chosen])
        self.taken.append(taken)
        self._moves += 1
        self._logits[len(self.taken)] = logits
        if len(self.taken) > _KEPT_LOGITS:  # the prompt's own (0) stay: one batch made them
            self._logits.pop(len(self.taken) - _KEPT_LOGITS, None)
        return taken.piece

    def greedy(self) -> str:
        """Take the most likely token after the penalties, as llama.cpp's greedy sampler does."""
        return self.step(int(np.argmax(penalise(self.logits, self.history, self.settings))), how="greedy")

    def back(self) -> str:
        """Undo the last token taken; returns its piece."""
        if not self.taken:
            raise InvalidInput("Nothing to undo: no token has been taken", "Call step() first")
        taken = self.taken.pop()
        self._moves += 1
        self._logits.pop(len(self.taken) + 1, None)
        if self._position not in self._logits:  # older than the logits kept: evaluate that position again
            self._logits[self._position] = self._call([*self._prompt_ids, *self.history])
        return taken.piece

    def run(self, max_tokens: int = 128) -> Iterator[str]:
        """Step with the settings until the text ends, ``max_tokens`` or the context is full; yields each piece."""
        for _ in range(max_tokens):
            if self.ended or self.room <= 1:
                return
            yield self.step()

    def draw(self, n: int, seed: int | None = 0) -> dict[str, int]:
        """Draw ``n`` tokens at this position with the settings (none is taken): piece -> count, most first."""
        counts = Counter(self.piece(i) for i in self.draw_ids(n, seed))
        return dict(counts.most_common())

    def draw_ids(self, n: int, seed: int | None = 0) -> np.ndarray:
        """``n`` draws at this position with the settings, as token ids."""
        if not isinstance(n, int) or n < 1:
            raise InvalidInput(f"draw({n!r}) needs a positive whole number", "For example draw(100)")
        probs = self.shaped().probs
        ids = np.nonzero(probs)[0]
        cumulative = np.cumsum(probs[ids])
        picks = np.searchsorted(cumulative, np.random.default_rng(seed).random(n) * cumulative[-1], side="right")
        return ids[np.minimum(picks, len(ids) - 1)]

    # --- text --------------------------------------------------------------------------------------
    @property
    def tokens(self) -> list[str]:
        """The pieces taken, in order."""
        return [t.piece for t in self.taken]

    @property
    def text(self) -> str:
        """The text the lab produced after the prompt."""
        return _decode(self.model, self.history)

    def __repr__(self) -> str:
        return (f"<Lab {len(self.taken)} tokens taken · entropy {self.entropy(False):.2f} bits · seed {self.seed} · "
                f"{self.settings}>")

    # --- the model ------------------------------------------------------------------------------
    def _call(self, ids: list[int]) -> np.ndarray:
        """:meth:`_evaluate` in a thread of its own, holding the model's lock; its result or its error here."""
        outcome: list[Any] = []

        def work() -> None:
            try:
                if not self.model.lock.acquire(timeout=_BUSY_WAIT):
                    raise LocalModelError("The local model stayed busy with another generation",
                                          "Wait for it to end, then try again", code="busy")
                try:
                    outcome.append(self._evaluate(ids))
                finally:
                    self.model.lock.release()
            except BaseException as exc:  # handed to the caller's thread
                outcome.append(exc)

        self.calls += 1
        worker = threading.Thread(target=work, name="qwen-lab", daemon=True)
        worker.start()
        worker.join()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _evaluate(self, ids: list[int]) -> np.ndarray:
        """Make the context hold ``ids`` and return a copy of the last position's logits (lock held).

        llama.cpp's numbers depend slightly on how tokens are batched, so the context is rebuilt the way the
        lab first built it, as ``Llama.generate`` does: the prompt in one batch, then one token at a time.
        What the context already holds is kept when it starts with the whole prompt and agrees with ``ids``.
        """
        llm = self.model.llm
        target = np.asarray(ids, dtype=np.intc)
        usable = min(llm.n_tokens, len(target) - 1)  # the last token is always evaluated: its logits are needed
        same = np.asarray(llm.input_ids[:usable]) == target[:usable]
        common = usable if same.all() else int(np.argmin(same))
        prompt = len(self._prompt_ids)
        try:
            if common < prompt:
                llm.n_tokens = 0
                llm.eval(self._prompt_ids)  # removes the context's cells from n_tokens on, first
                common = prompt
            llm.n_tokens = common
            for token in target[common:].tolist():
                llm.eval([token])
        except Exception as exc:
            llm.reset()
            raise LocalModelError(f"Local evaluation failed: {exc}", "Run it again", code="runtime_error") from exc
        pointer = self.llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _draw(self, result: Shaped, rng: np.random.Generator) -> int:
        ids = np.nonzero(result.probs)[0]
        cumulative = np.cumsum(result.probs[ids])
        pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        return int(ids[min(pick, len(ids) - 1)])

    def _token_id(self, token: int | str) -> int:
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
            if not 0 <= token < self.n_vocab:
                raise InvalidInput(f"Token id {token} is outside the vocabulary", f"Give an id in [0, {self.n_vocab})")
            return int(token)
        if not isinstance(token, str) or not token:
            raise InvalidInput(f"step({token!r}) needs a piece of text or a token id",
                               "For example step(' Paris') or step(12095)")
        for i, _ in self.top(1000, shaped=False):  # the likely pieces first: a piece can have several ids
            if self.piece(i) == token:
                return i
        ids = self.model.llm.tokenize(token.encode("utf-8"), add_bos=False, special=True)
        if len(ids) != 1:
            raise InvalidInput(f"{token!r} is {len(ids)} tokens, not one",
                               "Step one piece at a time: pick one from lab.distribution(), or give its id")
        return int(ids[0])


def open_lab(prompt: str, model: str = "local", *, chat: bool = False, seed: int | None = None,
             context: int = 4096, **settings: Any) -> Lab:
    """A lab over the local model ``model`` (``local``, ``local:0.5b``, ``local:1.5b`` or ``local:/file.gguf``),
    loaded once per process and shared with ``%%qwen -m local``; ``settings`` as :meth:`Lab.set`."""
    if not isinstance(prompt, str):
        raise InvalidInput(f"The lab's prompt must be text, not {type(prompt).__name__}", "Pass a string")
    if not prompt:
        raise InvalidInput("The lab's prompt is empty", "Give the text the model should continue")
    if model != "local" and not model.startswith("local:"):
        raise InvalidInput(f"The lab runs on the local model, not {model!r}",
                           "Use model='local', 'local:0.5b', 'local:1.5b' or 'local:/path/model.gguf'")
    chosen = Settings().changed(**settings)
    loaded = load(resolve(model), n_ctx=context)
    return Lab(loaded, prompt, chat=chat, seed=seed, settings=chosen)


def _prompt_ids(llm: Any, prompt: str, chat: bool) -> list[int]:
    """The raw text as ``create_completion`` tokenizes it, or, ``chat=True``, one user turn in the chat template."""
    if chat:
        from ..backends.local import _prompt_tokens  # the chat template applied as the backend applies it

        return _prompt_tokens(import_llama_cpp(), llm, [{"role": "user", "content": prompt}])[0]
    return llm.tokenize(prompt.encode("utf-8"), special=True) if prompt else []


_piece_tables: dict[str, list[str]] = {}
_piece_lock = threading.Lock()


def _pieces(model: LoadedModel) -> list[str]:
    """The text of every vocabulary entry, made once per model file (about a second)."""
    key = str(model.path)  # the vocabulary is the file's
    with _piece_lock:
        if key not in _piece_tables:
            llm = model.llm
            _piece_tables[key] = [llm.detokenize([i], special=True).decode("utf-8", errors="replace")
                                  for i in range(llm.n_vocab())]
        return _piece_tables[key]


def _decode(model: LoadedModel, ids: list[int]) -> str:
    """Text of a run of tokens; characters split across tokens are joined before decoding."""
    return model.llm.detokenize(ids, special=True).decode("utf-8", errors="replace") if ids else ""
