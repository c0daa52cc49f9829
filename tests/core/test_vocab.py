"""diagecg.vocab: FSQ index <-> ECG token string <-> LLM id, and the text tokenizer without ECG tokens."""

from __future__ import annotations

import json

import pytest

from diagecg.config import VocabConfig
from diagecg.constants import ECG_END_TOKEN, ECG_START_TOKEN
from diagecg.vocab import (
    check_vocab,
    ecg_span_ids,
    ecg_token_string,
    ecg_token_strings,
    find_ecg_token_text,
    indices_to_ids,
    is_ecg_id,
    special_token_strings,
    strip_ecg_tokens,
)

# the layout extend_vocabulary writes: 500 text tokens, then 16 codes, <ecg>, </ecg>
VOCAB = VocabConfig(
    n_codes=16,
    offset=500,
    start_id=516,
    end_id=517,
    vocab_size=520,
    base_vocab_size=500,
    bos_id=0,
    eos_id=1,
    pad_id=2,
)


def test_token_strings_follow_the_format() -> None:
    assert ecg_token_string(7) == "<ecg_0007>"
    assert ecg_token_strings(3) == ["<ecg_0000>", "<ecg_0001>", "<ecg_0002>"]
    assert ecg_token_strings(1296)[-1] == "<ecg_1295>"
    s = special_token_strings(4)
    assert s[:4] == ecg_token_strings(4) and s[4:] == [ECG_START_TOKEN, ECG_END_TOKEN]
    assert len(set(special_token_strings(1296))) == 1298
    with pytest.raises(ValueError):
        ecg_token_string(-1)


def test_indices_ids_roundtrip() -> None:
    idx = [0, 15, 3, 3, 9]
    ids = indices_to_ids(idx, VOCAB)
    assert ids == [500, 515, 503, 503, 509]
    assert all(is_ecg_id(i, VOCAB) for i in ids)
    assert not is_ecg_id(VOCAB.start_id, VOCAB) and not is_ecg_id(499, VOCAB)
    assert ecg_span_ids([1, 2], VOCAB) == [516, 501, 502, 517]


@pytest.mark.parametrize("bad", [[16], [-1], [0, 99]])
def test_out_of_range_indices_are_refused(bad: list[int]) -> None:
    with pytest.raises(ValueError, match="outside"):
        indices_to_ids(bad, VOCAB)


@pytest.mark.parametrize(
    "text, found",
    [
        ("is <ecg_0001> normal?", "<ecg_0001>"),
        ("</ecg>", "</ecg>"),
        ("< ECG >", "< ECG >"),
        ("<ecg_12345>", "<ecg_12345>"),
        ("an ecg with <b>bold</b>", None),
        ("ecg_0001", None),
    ],
)
def test_find_ecg_token_text(text: str, found: str | None) -> None:
    assert find_ecg_token_text(text) == found


def test_check_vocab_accepts_both_layouts_and_refuses_collisions() -> None:
    check_vocab(VOCAB)
    markers_first = VocabConfig(n_codes=16, offset=502, start_id=500, end_id=501, vocab_size=520)
    check_vocab(markers_first)  # the layout of the export tests' tokenizer
    with pytest.raises(ValueError, match="collides"):
        check_vocab(VocabConfig(n_codes=16, offset=500, start_id=505, end_id=517, vocab_size=520))
    with pytest.raises(ValueError, match="exceed vocab_size"):
        check_vocab(VocabConfig(n_codes=16, offset=500, start_id=516, end_id=517, vocab_size=517))
    with pytest.raises(ValueError, match="base_vocab_size"):
        check_vocab(VocabConfig(n_codes=16, offset=490, start_id=506, end_id=507, base_vocab_size=500))
    with pytest.raises(ValueError, match="eos_id"):
        check_vocab(VocabConfig(n_codes=16, offset=500, start_id=516, end_id=517, eos_id=516))


def _tokenizer_json(vocab: VocabConfig) -> dict:
    added = [{"id": i, "content": f"<s{i}>", "special": True} for i in range(3)]
    added += [
        {"id": vocab.offset + k, "content": s, "special": True}
        for k, s in enumerate(special_token_strings(vocab.n_codes))
    ]
    return {"version": "1.0", "added_tokens": added, "model": {"type": "BPE"}}


def test_strip_ecg_tokens_keeps_text_tokens_only() -> None:
    tj = _tokenizer_json(VOCAB)
    before = json.dumps(tj)
    out = strip_ecg_tokens(tj, VOCAB)
    assert [t["content"] for t in out["added_tokens"]] == ["<s0>", "<s1>", "<s2>"]
    assert out["model"] == tj["model"] and json.dumps(tj) == before  # input untouched


def test_strip_ecg_tokens_refuses_a_mismatching_vocab() -> None:
    shifted = VocabConfig(n_codes=16, offset=501, start_id=517, end_id=518, vocab_size=520)
    with pytest.raises(ValueError, match="expected '<ecg_0000>'"):
        strip_ecg_tokens(_tokenizer_json(VOCAB), shifted)
