"""llama-cpp-python wrapper: prompt token ids in, answer token ids and text out.

The prompt arrives as token ids (text pieces tokenized with the bundle's ``tokenizer.json``, ECG
ids inserted directly), so llama.cpp's own tokenizer is never used on the way in. Decoding is our
own short loop over ``Llama.eval`` and the last-position logits rather than llama.cpp's sampler
chain, for three reasons: greedy decoding is then exactly ``argmax`` (deterministic, ties to the
lowest id); the ids ``diagecg.decoding.DecodingPolicy`` bans (ECG ids and the ``<ecg>``/``</ecg>``
markers, bos/pad and other control tokens) are masked to ``-inf`` so an answer can never contain
them; and sampling, when asked for (temperature > 0), is seeded numpy code that behaves the same on
every build. Answer ids are decoded with the same ``tokenizers`` file that
encoded the prompt, which round-trips byte-level BPE exactly.

A :class:`LlamaModel` holds one llama.cpp context, which is not thread-safe: every call takes
the instance's lock, so concurrent callers are served one after another.

Prefix reuse: the context keeps the KV cells of the last sequence, and a prompt that starts like
it (the same patient and ECG, another question) evaluates only the tokens after the common prefix.
With Q8_0 and f16 models the logits are bitwise those of a fresh evaluation; K-quant kernels pick
another code path for small batches, which moves logits by ~1e-6, so an exact tie could resolve
differently. ``reuse_prefix=False`` evaluates every prompt from scratch.

Answer options side by side: the context holds ``N_SEQUENCES`` sequences over one unified KV cache.
:meth:`LlamaModel.score_options` evaluates the prompt once as sequence 0, shares its cells with one
sequence per option, and feeds every option's tokens in one ``llama_decode`` call, instead of one call
per option token (a "which of X or Y" question with ten options made twenty calls).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import llama_cpp
import numpy as np
from tokenizers import Tokenizer

from diagecg.config import VocabConfig
from diagecg.decoding import DecodingPolicy
from diagecg.errors import BundleError, InferenceError
from diagecg.runtime.device import available_memory_bytes, resolve_threads
from diagecg.runtime.gguf_header import GgufHparams, read_gguf_hparams
from diagecg.vocab import ecg_ids

logger = logging.getLogger(__name__)

MAX_BATCH = 512  # prompt tokens per llama_decode call
MIN_N_CTX = 64  # as GenerationConfig requires
KV_MEMORY_SHARE = 0.5  # the KV cache of n_ctx may take at most this share of the memory available now
N_SEQUENCES = 16  # sequences of a context: the prompt's, and answer options scored side by side
_DEFAULTS_LOCK = threading.Lock()


@dataclasses.dataclass
class Generation:
    """One decoded answer.

    Attributes:
        token_ids: generated ids, the stop id excluded.
        text: ``token_ids`` decoded by the bundle's text tokenizer, stripped.
        n_prompt_tokens: prompt length in tokens.
        n_reused_tokens: leading prompt tokens whose KV cells were kept from the previous call.
        stop_reason: ``"eos"`` (a stop id was produced) or ``"length"`` (token budget spent).
        logprob: natural log of the decoded sequence's probability: the sum over its tokens (and
            the stop token, when one ended it) of log-softmax over the ids an answer may contain.
        warnings: e.g. the budget cut to fit the context.
    """

    token_ids: list[int]
    text: str
    n_prompt_tokens: int
    stop_reason: str
    n_reused_tokens: int = 0
    logprob: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)


def load_text_tokenizer(path: str | Path) -> Tokenizer:
    """Load a Hugging Face ``tokenizers`` JSON file (one parse per distinct file content, shared).

    Raises:
        BundleError: the file is missing or unreadable.
    """
    try:
        return _parse_tokenizer(Path(path).read_text(encoding="utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception subclass; OSError, UnicodeDecodeError
        raise BundleError(f"cannot load the text tokenizer {path}: {e}") from e


# tokenizers 0.23 keeps ~5 KB of native memory per Tokenizer that has encoded text, after the object is
# dropped (200 load-encode cycles: +1.0 MB in use, none with one Tokenizer reused); a Tokenizer is read-only
# once built and safe to share between threads, so each file content is parsed once per process
@functools.lru_cache(maxsize=4)
def _parse_tokenizer(text: str) -> Tokenizer:
    return Tokenizer.from_str(text)


_MASKED_ATTRS = (
    llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED
    | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
)
_TYPED_ATTRS = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED  # text -> one id


class LlamaModel:
    """One GGUF model loaded in llama.cpp, decoding answers under ECG-token masking.

    Args:
        gguf_path: the bundle's ``llm-<quant>.gguf``.
        vocab: where the ECG ids sit (offset, n_codes, start_id, end_id, vocab_size).
        n_ctx: context size in tokens (the manifest's ``generation.n_ctx``).
        tokenizer: the bundle's text tokenizer (no ECG tokens) for question text and answers;
            None = llama.cpp's own tokenizer from the GGUF (for bundles without ``tokenizer.json``).
        stop_ids: extra ids that end an answer, besides ``vocab.eos_id`` and the GGUF's
            end-of-generation ids (eos, eot...); never part of the answer.
        threads: CPU threads; None = ``device.default_threads()``.
        n_gpu_layers: layers offloaded to the GPU (-1 = all, 0 = CPU only).

        reuse_prefix: keep the KV cells of the previous sequence and evaluate only what a new
            prompt does not share with it (see the module docstring).
        flash_attn: llama.cpp's fused attention kernel. Off by default: on the CPU it keeps its
            accumulators in f16, so logits move (about 1% of their range on the test model, enough to
            change greedy answers of a random-weight model) and a reused prefix no longer gives the
            bitwise logits of a fresh evaluation; ``bench/prefill.py`` times both.

    Attributes:
        stop_ids: every id that ends an answer.
        n_ctx, n_vocab: of the loaded model.

    Raises:
        InferenceError: llama.cpp cannot load the file.
        BundleError: the model's vocabulary size disagrees with the bundle's vocab config.
    """

    def __init__(
        self,
        gguf_path: str | Path,
        *,
        vocab: VocabConfig,
        n_ctx: int,
        tokenizer: Tokenizer | None = None,
        stop_ids: Iterable[int] = (),
        threads: int | None = None,
        n_gpu_layers: int = 0,
        reuse_prefix: bool = True,
        flash_attn: bool = False,
    ) -> None:
        self.path = Path(gguf_path)
        self.reuse_prefix = reuse_prefix
        self.threads = resolve_threads(threads)
        self.n_gpu_layers = n_gpu_layers
        self.tokenizer = tokenizer
        self.vocab = vocab
        self._lock = threading.Lock()
        self._closed = False
        check_context(n_ctx, read_gguf_hparams(self.path), self.path)
        n_batch = min(MAX_BATCH, n_ctx)
        try:
            with _sequences(N_SEQUENCES):
                self._llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=self.threads,
                    n_threads_batch=self.threads,
                    n_gpu_layers=n_gpu_layers,
                    logits_all=False,
                    seed=0,
                    verbose=False,
                    flash_attn=flash_attn,
                )
        except Exception as e:  # llama-cpp-python raises ValueError("Failed to load model from file")
            raise InferenceError(f"llama.cpp cannot load {self.path}: {e}") from e
        self.n_ctx = int(self._llm.n_ctx())
        self.n_vocab = int(self._llm.n_vocab())
        self.n_batch = n_batch
        self.n_sequences = int(llama_cpp.llama_n_seq_max(self._llm.ctx))
        if vocab.vocab_size and self.n_vocab != vocab.vocab_size:
            raise BundleError(
                f"{self.path.name}: the model has {self.n_vocab} tokens but the manifest's "
                f"vocab.vocab_size is {vocab.vocab_size}"
            )
        llama_vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        attrs = np.fromiter(
            (llama_cpp.llama_vocab_get_attr(llama_vocab, i) for i in range(self.n_vocab)),
            dtype=np.int64,
            count=self.n_vocab,
        )
        eog = sorted(
            i
            for i in range(self.n_vocab)
            if (attrs[i] & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL)
            and llama_cpp.llama_vocab_is_eog(llama_vocab, i)
        )
        special = np.flatnonzero((attrs & _MASKED_ATTRS) != 0).tolist()  # bos, pad, unused... of the GGUF
        text_vocab = None
        if tokenizer is not None:
            text_vocab = tokenizer.get_vocab_size(with_added_tokens=True)
            special += [i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special]
        try:
            self.policy = DecodingPolicy.build(
                vocab,
                self.n_vocab,
                extra_stop_ids=[*eog, int(self._llm.token_eos()), *stop_ids],
                text_vocab_size=text_vocab,
                extra_banned_ids=special,
            )
        except ValueError as e:
            raise BundleError(f"{self.path.name}: {e}") from None
        self.stop_ids = frozenset(self.policy.stop_ids)
        self._banned = self.policy.banned_mask()
        ecg = set(ecg_ids(vocab))
        texts = (
            {
                tok.content
                for i, tok in tokenizer.get_added_tokens_decoder().items()
                if tok.special and i not in ecg
            }
            if tokenizer is not None
            else {
                llama_cpp.llama_vocab_get_text(llama_vocab, i).decode("utf-8", errors="replace")
                for i in np.flatnonzero((attrs & _TYPED_ATTRS) != 0).tolist()
                if i not in ecg
            }
        )
        # the special tokens' texts (bos, eos, chat markers...): a question must not contain them
        self.special_texts: tuple[str, ...] = tuple(
            sorted((t for t in texts if t.strip()), key=len, reverse=True)
        )

    def find_special_text(self, text: str) -> str | None:
        """The first special token's text (``<|end_of_text|>``...) found in ``text``, or None."""
        return next((t for t in self.special_texts if t in text), None)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text, no special tokens (ECG-token strings stay plain text)."""
        if self.tokenizer is not None:
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        with self._lock:
            self._check_open()
            return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of answer ids (special tokens skipped)."""
        if self.tokenizer is not None:
            return self.tokenizer.decode(list(ids), skip_special_tokens=True)
        with self._lock:
            self._check_open()
            return self._llm.detokenize(list(ids), special=False).decode("utf-8", errors="replace")

    def _prefill(self, prompt: list[int]) -> tuple[np.ndarray, int]:
        """Evaluate a prompt, keeping the KV cells of its common prefix with the context's sequence.

        Returns the next-token logits and how many prompt tokens were reused. At least the last
        prompt token is always evaluated: its logits are the ones needed.
        """
        n_reused = 0
        if self.reuse_prefix:
            held = self._llm.input_ids[: self._llm.n_tokens]
            n = min(len(held), len(prompt) - 1)
            differs = np.flatnonzero(held[:n] != np.asarray(prompt[:n], dtype=held.dtype))
            n_reused = int(differs[0]) if differs.size else n
        if n_reused:
            self._llm.n_tokens = n_reused  # eval() drops the KV cells from this position on
        else:
            self._llm.reset()
        return self._eval(prompt[n_reused:]), n_reused

    def _eval(self, ids: Sequence[int]) -> np.ndarray:
        """Feed ``ids`` and return the next-token logits, float32 (n_vocab,)."""
        try:
            self._llm.eval(ids)
        except Exception as e:
            n_done = self._llm.n_tokens
            self._llm.reset()  # the next prompt starts from an empty context
            raise InferenceError(f"llama.cpp decode failed after {n_done} tokens: {e}") from e
        ptr = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        if not np.isfinite(logits).all():  # damaged weights; a NaN would become an answer's probability
            n_bad = int((~np.isfinite(logits)).sum())
            self._llm.reset()
            raise InferenceError(
                f"{self.path.name}: the model produced {n_bad} non-finite logits (NaN/inf) "
                f"of {self.n_vocab}: its weights are damaged; no answer can be given"
            )
        return logits

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int = 1,
        top_p: float = 1.0,
        repeat_penalty: float = 1.0,
        seed: int = 0,
    ) -> Generation:
        """Decode an answer to a prompt.

        Greedy (``argmax``) when ``temperature == 0`` or ``top_k == 1``; otherwise seeded sampling
        with repeat penalty, temperature, top-k and top-p, in that order (llama.cpp's order).

        Args:
            prompt_ids: the full prompt as token ids (bos included when the template wants it).
            max_new_tokens: token budget; cut to the room left in the context, with a warning.
            temperature: 0 = greedy.
            top_k: keep the k most likely ids (0 = all).
            top_p: nucleus mass.
            repeat_penalty: > 1 discourages ids already in prompt or answer.
            seed: sampling seed (ignored when greedy).

        Returns:
            The answer ids (stop id excluded) and their text.

        Raises:
            InferenceError: the prompt does not fit the context, contains an id outside the
                vocabulary, or llama.cpp fails.
        """
        prompt = [int(i) for i in prompt_ids]
        n_prompt = len(prompt)
        if n_prompt == 0:
            raise InferenceError("empty prompt")
        if n_prompt >= self.n_ctx:
            raise InferenceError(
                f"the prompt has {n_prompt} tokens but the context holds n_ctx={self.n_ctx} "
                f"(at least {n_prompt + 1} needed to answer); shorten the question or use a "
                f"bundle with a larger n_ctx"
            )
        bad = [i for i in prompt if not 0 <= i < self.n_vocab]
        if bad:
            raise InferenceError(f"prompt ids {bad[:5]} are outside the vocabulary [0, {self.n_vocab})")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} is invalid: must be >= 1")
        warnings: list[str] = []
        room = self.n_ctx - n_prompt
        if max_new_tokens > room:
            msg = (
                f"max_new_tokens={max_new_tokens} cut to {room}: the prompt takes {n_prompt} of "
                f"n_ctx={self.n_ctx} tokens"
            )
            logger.warning(msg)
            warnings.append(msg)
            max_new_tokens = room
        greedy = temperature == 0 or top_k == 1
        rng = np.random.default_rng(seed)

        out: list[int] = []
        stop_reason = "length"
        logprob = 0.0
        with self._lock:
            self._check_open()
            logits, n_reused = self._prefill(prompt)
            for step in range(max_new_tokens):
                logits[self._banned] = -np.inf
                if greedy:
                    tok = int(np.argmax(logits))
                else:
                    tok = _sample(
                        logits,
                        prompt + out,
                        rng,
                        temperature=temperature,
                        top_k=top_k,
                        top_p=top_p,
                        repeat_penalty=repeat_penalty,
                    )
                logprob += _log_softmax_at(logits, tok)
                if tok in self.stop_ids:
                    stop_reason = "eos"
                    break
                out.append(tok)
                if step + 1 < max_new_tokens:
                    logits = self._eval([tok])
        if not np.isfinite(logprob):
            raise InferenceError(
                f"{self.path.name}: the answer's log-probability is {logprob} (a token "
                f"the model gives no probability)"
            )
        text = self.decode(out).strip()
        return Generation(
            token_ids=out,
            text=text,
            n_prompt_tokens=n_prompt,
            stop_reason=stop_reason,
            n_reused_tokens=n_reused,
            logprob=logprob,
            warnings=warnings,
        )

    def option_probabilities(self, prompt_ids: Sequence[int], options: Sequence[Sequence[int]]) -> np.ndarray:
        """:meth:`score_options` without the reuse count."""
        return self.score_options(prompt_ids, options)[0]

    def score_options(
        self, prompt_ids: Sequence[int], options: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, int]:
        """Probabilities of whole answer continuations after a prompt, normalised over the options.

        Each option (e.g. the ids of ``" yes"`` + eos) is scored by teacher forcing: the sum of its
        tokens' log-probabilities (log-softmax over the whole vocabulary, as ``diagecg eval`` does);
        the prompt is evaluated once and every option continues from its KV cells.

        Args:
            prompt_ids: the full prompt as token ids.
            options: token ids of each option's continuation (non-empty).

        Returns:
            float64 (len(options),) summing to 1, and how many prompt tokens' KV cells were reused.

        Raises:
            InferenceError: no options, an empty option, a prompt plus option longer than the
                context, or llama.cpp fails.
        """
        prompt = [int(i) for i in prompt_ids]
        if not options or any(len(o) == 0 for o in options):
            raise InferenceError("option_probabilities needs at least one non-empty option")
        longest = max(len(o) for o in options)
        if longest - 1 > self.n_batch:
            raise InferenceError(
                f"an answer option of {longest} tokens is longer than a batch ({self.n_batch} + 1)"
            )
        if not prompt or len(prompt) + longest > self.n_ctx:
            raise InferenceError(
                f"the prompt ({len(prompt)} tokens) and its longest option ({longest}) "
                f"do not "
                f"fit n_ctx={self.n_ctx}"
            )
        logp = np.zeros(len(options))
        with self._lock:
            self._check_open()
            first, n_reused = self._prefill(prompt)
            for k, option in enumerate(options):
                logp[k] = _log_softmax_at(first, int(option[0]))
            longer = [(k, [int(t) for t in o]) for k, o in enumerate(options) if len(o) > 1]
            for group in self._option_groups(longer):
                self._score_continuations(len(prompt), group, logp)
        p = np.exp(logp - logp.max())
        p /= p.sum()
        if not np.isfinite(p).all():  # every option at -inf (all of them banned or underflowed)
            raise InferenceError(
                f"{self.path.name}: the options' probabilities are not finite "
                f"(log-probabilities {logp.tolist()})"
            )
        return p, n_reused

    def _option_groups(self, options: list[tuple[int, list[int]]]) -> Iterator[list[tuple[int, list[int]]]]:
        """``options`` in groups that fit one ``llama_decode``: a sequence each beside the prompt's, and
        their tokens (all but the last: its log-probability needs no evaluation) within the batch."""
        group: list[tuple[int, list[int]]] = []
        n_tokens = 0
        for k, option in options:
            if group and (len(group) + 1 >= self.n_sequences or n_tokens + len(option) - 1 > self.n_batch):
                yield group
                group, n_tokens = [], 0
            group.append((k, option))
            n_tokens += len(option) - 1
        if group:
            yield group

    def _score_continuations(
        self, n_prompt: int, group: list[tuple[int, list[int]]], logp: np.ndarray
    ) -> None:
        """Add to ``logp[k]`` the log-probabilities of option k's tokens after its first, all options in
        one ``llama_decode``: option ``s`` is sequence ``s`` (1...), sharing the prompt's KV cells with
        sequence 0; its cells are dropped afterwards. Sequential evaluation gives the same logits (the
        attention of each sequence sees only its own cells)."""
        if len(group) >= self.n_sequences or sum(len(o) - 1 for _, o in group) > self.n_batch:
            raise InferenceError(f"{len(group)} options do not fit one batch of this context")
        ctx = self._llm.ctx
        memory = llama_cpp.llama_get_memory(ctx)
        batch = self._llm._batch.batch
        rows: list[tuple[int, int, int]] = []  # (option, the token scored, its row in the batch)
        for seq, (k, option) in enumerate(group, start=1):
            llama_cpp.llama_memory_seq_cp(memory, 0, seq, 0, n_prompt)
            for j, tok in enumerate(option[:-1]):
                i = len(rows)
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, n_prompt + j, 1
                batch.seq_id[i][0], batch.logits[i] = seq, True
                rows.append((k, option[j + 1], i))
        batch.n_tokens = len(rows)
        try:
            status = llama_cpp.llama_decode(ctx, batch)
        finally:
            for seq in range(1, len(group) + 1):
                llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
        if status != 0:
            raise InferenceError(f"llama.cpp decode of {len(group)} answer options failed (status {status})")
        for k, tok, i in rows:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,))
            if not np.isfinite(logits).all():
                raise InferenceError(
                    f"{self.path.name}: the model produced non-finite logits (NaN/inf): its "
                    f"weights are damaged; no answer can be given"
                )
            logp[k] += _log_softmax_at(logits, tok)

    def reset(self) -> None:
        """Forget the held sequence: the next prompt is evaluated from scratch."""
        with self._lock:
            if not self._closed:
                self._llm.reset()

    def close(self) -> None:
        """Free the llama.cpp model and context now rather than at garbage collection. Idempotent;
        any later call raises ``InferenceError`` (llama.cpp would crash the process)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._llm.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InferenceError(f"{self.path.name}: the model was closed (close()); load the bundle again")


@contextlib.contextmanager
def _sequences(n: int) -> Iterator[None]:
    """While a ``Llama`` is built in this block, its context holds ``n`` sequences over one unified KV
    cache (each may use the whole context). llama-cpp-python's ``Llama()`` takes no such argument: it
    starts from ``llama_context_default_params()`` (one sequence), so that function answers with these
    settings for the duration (under a lock: another thread building a Llama waits)."""
    module = llama_cpp.llama_cpp
    defaults = module.llama_context_default_params

    def with_sequences() -> llama_cpp.llama_context_params:
        params = defaults()
        params.n_seq_max = min(n, int(llama_cpp.llama_max_parallel_sequences()))
        params.kv_unified = True
        return params

    with _DEFAULTS_LOCK:
        module.llama_context_default_params = with_sequences
        try:
            yield
        finally:
            module.llama_context_default_params = defaults


def check_context(n_ctx: int, hparams: GgufHparams, path: Path) -> None:
    """Refuse a context size the model or this machine cannot hold, before llama.cpp allocates it.

    Raises:
        BundleError: ``n_ctx`` is not an int in ``MIN_N_CTX..hparams.context_length`` (the context the
            model was trained with; above it positions are meaningless, and llama.cpp's 32-bit field
            would wrap a value above 2**32), or its KV cache needs more than ``KV_MEMORY_SHARE`` of the
            memory available now.
    """
    if (
        isinstance(n_ctx, bool)
        or not isinstance(n_ctx, int)
        or not MIN_N_CTX <= n_ctx <= hparams.context_length
    ):
        raise BundleError(
            f"{path.name}: the manifest's generation.n_ctx={n_ctx!r} is invalid: an int in "
            f"{MIN_N_CTX}..{hparams.context_length} (the model's trained context length, "
            f"{hparams.architecture}.context_length in the GGUF)"
        )
    need, free = hparams.kv_cache_bytes(n_ctx), available_memory_bytes()
    if free is not None and need > KV_MEMORY_SHARE * free:
        raise BundleError(
            f"{path.name}: generation.n_ctx={n_ctx} needs a {need / 2**20:.0f} MiB KV cache, "
            f"more than {KV_MEMORY_SHARE:.0%} of the {free / 2**20:.0f} MiB of memory "
            f"available; use a smaller n_ctx"
        )


def _log_softmax_at(logits: np.ndarray, token: int) -> float:
    """log p(token) under softmax(logits), in float64 (masked ids at -inf take no mass)."""
    x = logits.astype(np.float64)
    top = x.max()
    return float(x[token] - top - np.log(np.exp(x - top).sum()))


def _sample(
    logits: np.ndarray,
    history: Sequence[int],
    rng: np.random.Generator,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    repeat_penalty: float,
) -> int:
    """Draw one id from masked logits (float32 (n_vocab,), banned ids at -inf)."""
    x = logits.astype(np.float64)
    if repeat_penalty != 1.0 and history:
        seen = np.unique(np.asarray(history, dtype=np.int64))
        vals = x[seen]
        x[seen] = np.where(vals > 0, vals / repeat_penalty, vals * repeat_penalty)
    x = x / max(temperature, 1e-6)
    order = np.argsort(-x, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    order = order[np.isfinite(x[order])]
    p = np.exp(x[order] - x[order[0]])
    p /= p.sum()
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), top_p) + 1)
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(order[rng.choice(len(order), p=p)])
