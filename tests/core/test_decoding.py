"""The one decoding policy (diagecg.decoding)."""

from __future__ import annotations

import pytest

from diagecg.config import VocabConfig
from diagecg.decoding import DecodingPolicy, option_continuations
from diagecg.prompts import PromptConfig
from diagecg.vocab import ecg_ids

# 100 text ids, 10 codes at 100-109, markers 110/111; bos 1, eos 2, pad 3
VOCAB = VocabConfig(
    n_codes=10,
    offset=100,
    start_id=110,
    end_id=111,
    vocab_size=112,
    base_vocab_size=100,
    bos_id=1,
    eos_id=2,
    pad_id=3,
)


def test_policy_bans_ecg_ids_and_specials_and_stops_at_eos() -> None:
    p = DecodingPolicy.build(VOCAB, 112, extra_stop_ids=[None, 5, 2])
    assert p.stop_ids == (2, 5)  # the vocabulary's eos first, no duplicates
    assert ecg_ids(VOCAB) == frozenset(range(100, 112))
    assert p.banned_ids == ecg_ids(VOCAB) | {1, 3}
    mask = p.banned_mask()
    assert mask.shape == (112,) and mask[100:].all() and mask[1] and not mask[2] and not mask[50]


def test_rows_beyond_the_text_tokenizer_and_extra_specials_are_banned_stops_never() -> None:
    p = DecodingPolicy.build(VOCAB, 120, text_vocab_size=90, extra_banned_ids=[4, 2])
    assert set(range(90, 120)) <= p.banned_ids and 4 in p.banned_ids and 2 not in p.banned_ids


def test_policy_errors() -> None:
    no_eos = VocabConfig(n_codes=10, offset=100, start_id=110, end_id=111, vocab_size=112)
    with pytest.raises(ValueError, match="no eos"):
        DecodingPolicy.build(no_eos, 112)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        DecodingPolicy.build(VOCAB, 112, extra_stop_ids=[500])
    with pytest.raises(ValueError, match="every non-stop token id is banned"):
        DecodingPolicy.build(VOCAB, 112, text_vocab_size=0)


def test_option_continuations_are_prefix_answer_eos() -> None:
    def encode(text: str) -> list[int]:
        return [ord(c) % 90 + 10 for c in text]

    got = option_continuations(PromptConfig(), encode, ["yes", "no"], 2)
    assert got == [[*encode(" yes"), 2], [*encode(" no"), 2]]
