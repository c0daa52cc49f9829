"""FSQ index <-> ECG token string <-> LLM token id (torch-free; DiagECG, arXiv 2508.15338).

FSQ code ``k`` of the ECG tokenizer becomes the LLM token ``<ecg_k>`` (``constants.ECG_TOKEN_FORMAT``),
and an ECG span is written ``<ecg> <ecg_k1> ... <ecg_kn> </ecg>``. The ECG tokens are added to the
LLM vocabulary in one block, so their ids are contiguous: ``id = vocab.offset + k``
(``VocabConfig``). Prompts never tokenize these strings: the ids are inserted directly
(``diagecg.prompts.encode_prompt``), and the text tokenizer used for typed text has no ECG tokens
(:func:`strip_ecg_tokens`), so typed ``"<ecg_0001>"`` can never become an ECG id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from diagecg.config import VocabConfig
from diagecg.constants import ECG_END_TOKEN, ECG_START_TOKEN, ECG_TOKEN_FORMAT, ECG_TOKEN_PATTERN

__all__ = [
    "check_vocab",
    "ecg_code_ids",
    "ecg_ids",
    "ecg_span_ids",
    "ecg_token_string",
    "ecg_token_strings",
    "find_ecg_token_text",
    "indices_to_ids",
    "is_ecg_id",
    "special_token_strings",
    "strip_ecg_tokens",
]

_ECG_TEXT_RE = re.compile(ECG_TOKEN_PATTERN, re.IGNORECASE)


def ecg_token_string(index: int) -> str:
    """``"<ecg_0007>"`` for FSQ index 7."""
    if index < 0:
        raise ValueError(f"FSQ index {index} is invalid: must be >= 0")
    return ECG_TOKEN_FORMAT.format(index)


def ecg_token_strings(n_codes: int) -> list[str]:
    """The code tokens ``<ecg_0000>`` .. ``<ecg_{n_codes-1}>``, in index order."""
    if n_codes < 1:
        raise ValueError(f"n_codes={n_codes} is invalid: must be >= 1")
    return [ECG_TOKEN_FORMAT.format(k) for k in range(n_codes)]


def special_token_strings(n_codes: int) -> list[str]:
    """Every token the vocabulary extension adds, in the order it adds them: codes, ``<ecg>``, ``</ecg>``.

    With this order ``offset = base``, ``start_id = base + n_codes`` and ``end_id = start_id + 1``.
    """
    return [*ecg_token_strings(n_codes), ECG_START_TOKEN, ECG_END_TOKEN]


def ecg_code_ids(vocab: VocabConfig) -> range:
    """Ids of ``<ecg_0000>`` ... in code order (frame codes, then summary codes)."""
    return range(vocab.offset, vocab.offset + vocab.n_codes)


def ecg_ids(vocab: VocabConfig) -> frozenset[int]:
    """Every ECG token id: the codes and the ``<ecg>`` / ``</ecg>`` markers."""
    return frozenset((*ecg_code_ids(vocab), vocab.start_id, vocab.end_id))


def is_ecg_id(token_id: int, vocab: VocabConfig) -> bool:
    """True for the id of an ECG code token (not the ``<ecg>``/``</ecg>`` markers)."""
    return vocab.offset <= token_id < vocab.offset + vocab.n_codes


def indices_to_ids(indices: Iterable[int], vocab: VocabConfig) -> list[int]:
    """FSQ indices -> LLM token ids (``offset + k``).

    Raises:
        ValueError: an index outside ``[0, n_codes)``.
    """
    out = [int(k) for k in indices]
    bad = [k for k in out if not 0 <= k < vocab.n_codes]
    if bad:
        raise ValueError(f"FSQ indices {bad[:5]} are outside [0, {vocab.n_codes})")
    return [vocab.offset + k for k in out]


def ecg_span_ids(indices: Iterable[int], vocab: VocabConfig) -> list[int]:
    """``[<ecg>] + ids + [</ecg>]`` for one record's FSQ indices."""
    return [vocab.start_id, *indices_to_ids(indices, vocab), vocab.end_id]


def find_ecg_token_text(text: str) -> str | None:
    """The first substring of ``text`` that looks like an ECG token (``constants.ECG_TOKEN_PATTERN``)."""
    m = _ECG_TEXT_RE.search(text)
    return m.group(0) if m else None


def check_vocab(vocab: VocabConfig) -> None:
    """Check that an extended vocabulary is laid out as the extension writes it.

    The code ids must fit in ``vocab_size``, the markers must not collide with the codes, and the
    ECG tokens must lie after the text tokenizer's ``base_vocab_size`` tokens.

    Raises:
        ValueError: naming the inconsistent fields.
    """
    end_codes = vocab.offset + vocab.n_codes
    if vocab.vocab_size and not (
        end_codes <= vocab.vocab_size
        and vocab.start_id < vocab.vocab_size
        and vocab.end_id < vocab.vocab_size
    ):
        raise ValueError(
            f"VocabConfig: ECG ids (codes [{vocab.offset}, {end_codes}), start "
            f"{vocab.start_id}, end {vocab.end_id}) exceed vocab_size={vocab.vocab_size}"
        )
    for name in ("start_id", "end_id"):
        if vocab.offset <= getattr(vocab, name) < end_codes:
            raise ValueError(
                f"VocabConfig.{name}={getattr(vocab, name)} collides with the code ids "
                f"[{vocab.offset}, {end_codes})"
            )
    if vocab.start_id == vocab.end_id:
        raise ValueError(f"VocabConfig: start_id == end_id == {vocab.start_id}")
    if vocab.base_vocab_size and min(vocab.offset, vocab.start_id, vocab.end_id) < vocab.base_vocab_size:
        raise ValueError(
            f"VocabConfig: ECG ids start below base_vocab_size={vocab.base_vocab_size}, "
            f"so they would collide with text tokens"
        )
    ecg = ecg_ids(vocab)
    for name in ("bos_id", "eos_id", "pad_id"):
        v = getattr(vocab, name)
        if v is not None and v in ecg:
            raise ValueError(f"VocabConfig.{name}={v} is an ECG token id")


def strip_ecg_tokens(tokenizer_json: dict[str, Any], vocab: VocabConfig) -> dict[str, Any]:
    """The base text tokenizer: a ``tokenizers`` JSON with the ECG added tokens removed.

    The ECG tokens are *added tokens* of the extended tokenizer, so removing them from
    ``added_tokens`` gives back the text tokenizer exactly (same model, merges, pre-tokenizer).

    Args:
        tokenizer_json: the parsed ``tokenizer.json`` of the extended tokenizer.
        vocab: where the ECG tokens sit.

    Returns:
        A new dict; the input is not modified.

    Raises:
        ValueError: an ECG token is missing or sits at another id than ``vocab`` says.
    """
    expected = {vocab.index_to_id(k): ECG_TOKEN_FORMAT.format(k) for k in range(vocab.n_codes)}
    expected[vocab.start_id] = ECG_START_TOKEN
    expected[vocab.end_id] = ECG_END_TOKEN
    found = {
        int(t["id"]): t["content"] for t in tokenizer_json.get("added_tokens", []) if int(t["id"]) in expected
    }
    wrong = sorted(i for i, s in expected.items() if found.get(i) != s)
    if wrong:
        i = wrong[0]
        raise ValueError(
            f"tokenizer: id {i} holds {found.get(i)!r}, expected {expected[i]!r} "
            f"({len(wrong)} ECG ids differ)"
        )
    out = dict(tokenizer_json)
    out["added_tokens"] = [t for t in tokenizer_json.get("added_tokens", []) if int(t["id"]) not in expected]
    return out
