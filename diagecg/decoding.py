"""The one decoding policy (torch-free): which ids end an answer, which an answer may never contain,
and how closed answer options become token continuations.

Training's greedy decoders (``training.sft``, ``training.evaluate``), export parity and the runtime
(``runtime.llm``) all build a :class:`DecodingPolicy` instead of their own id sets:

* **ECG ids** (``diagecg.vocab.ecg_ids``): the code tokens ``<ecg_k>`` and the ``<ecg>`` / ``</ecg>`` markers.
  They go into a prompt only as ids, never out of the model.
* **stop ids**: the vocabulary's eos first, then any other end-of-generation id the model names
  (its generation config, the GGUF's end-of-generation tokens). A stop id ends an answer and is not
  part of it.
* **banned ids**: the ECG ids, bos and pad, embedding rows beyond the text tokenizer (nothing could
  decode them), and any other special ids the caller names (the GGUF's control tokens), minus the
  stop ids. Their logits are set to -inf at every decoding step.
* **option continuations** (:func:`option_continuations`): a closed answer option is scored as the
  whole continuation ``answer_prefix + option + eos`` (teacher-forced), as the model was trained to
  write it; the runtime and ``diagecg eval`` score options this way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from diagecg.config import VocabConfig
from diagecg.prompts import EncodeText, PromptConfig, encode_answer
from diagecg.vocab import ecg_ids

__all__ = ["DecodingPolicy", "option_continuations"]


@dataclasses.dataclass(frozen=True)
class DecodingPolicy:
    """Stop and banned ids of one model (see the module docstring).

    Attributes:
        vocab_size: rows of the model's embedding (logit width).
        stop_ids: ids that end an answer, the vocabulary's eos first.
        banned_ids: ids an answer may never contain (never a stop id).
    """

    vocab_size: int
    stop_ids: tuple[int, ...]
    banned_ids: frozenset[int]

    @classmethod
    def build(
        cls,
        vocab: VocabConfig,
        vocab_size: int,
        *,
        extra_stop_ids: Iterable[int | None] = (),
        text_vocab_size: int | None = None,
        extra_banned_ids: Iterable[int] = (),
    ) -> DecodingPolicy:
        """The policy of a model with an extended vocabulary.

        Args:
            vocab: where the ECG ids, bos, eos and pad sit.
            vocab_size: the model's logit width.
            extra_stop_ids: other end-of-generation ids (None entries are skipped).
            text_vocab_size: tokens the text tokenizer can decode (ids at or above it are banned);
                None = ``vocab.base_vocab_size`` when set, else no such limit.
            extra_banned_ids: other ids never to generate (special/control tokens).

        Raises:
            ValueError: no stop id, a stop id outside the vocabulary, or every non-stop id banned.
        """
        stops: list[int] = []
        for i in (vocab.eos_id, *extra_stop_ids):
            if i is not None and int(i) not in stops:
                stops.append(int(i))
        if not stops:
            raise ValueError("no eos id (VocabConfig.eos_id or the model's): answers could never end")
        outside = [i for i in stops if not 0 <= i < vocab_size]
        if outside:
            raise ValueError(f"stop ids {outside} are outside the vocabulary of {vocab_size}")
        limit = text_vocab_size if text_vocab_size is not None else (vocab.base_vocab_size or vocab_size)
        banned = {
            *ecg_ids(vocab),
            *range(min(limit, vocab_size), vocab_size),
            *(int(i) for i in extra_banned_ids),
        }
        banned |= {i for i in (vocab.bos_id, vocab.pad_id) if i is not None}
        banned = {i for i in banned if 0 <= i < vocab_size} - set(stops)
        if len(banned) >= vocab_size - len(stops):
            raise ValueError("every non-stop token id is banned; check the vocab config")
        return cls(vocab_size=vocab_size, stop_ids=tuple(stops), banned_ids=frozenset(banned))

    def banned_mask(self) -> np.ndarray:
        """Bool (vocab_size,): True where an id is banned."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        mask[sorted(self.banned_ids)] = True
        return mask


def option_continuations(
    cfg: PromptConfig, encode_text: EncodeText, options: Sequence[str], eos_id: int | None
) -> list[list[int]]:
    """Each closed answer option as the ids the model was trained to write for it
    (``answer_prefix + option`` then eos; ``diagecg.prompts.encode_answer``)."""
    return [encode_answer(cfg, encode_text, o, eos_id) for o in options]
