"""HF vs GGUF parity reports: logits per position and greedy answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagecg.decoding import DecodingPolicy
from diagecg.errors import ExportError
from diagecg.export.parity import (
    check_thresholds,
    greedy_gguf,
    greedy_hf,
    greedy_parity,
    logits_parity,
    open_gguf,
)
from diagecg.export.quantize import quantize_gguf


def _policy(model, stop: tuple[int, ...] = (), banned: tuple[int, ...] = ()) -> DecodingPolicy:
    rows = model.get_input_embeddings().weight.shape[0]
    return DecodingPolicy(vocab_size=rows, stop_ids=stop, banned_ids=frozenset(banned))


PROMPTS = [
    ("does this ecg show atrial fibrillation?", [3, 3, 7, 12, 0, 15, 9, 9]),
    ("does this ecg show left bundle branch block?", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ("sinus rhythm", [15, 14, 13, 0, 0, 0]),
]


@pytest.fixture(scope="module")
def q8_gguf(tiny_llama_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize_gguf(tiny_llama_gguf, tmp_path_factory.mktemp("q8") / "q8_0.gguf", "q8_0", n_threads=1)


def test_logits_parity_reports_each_quant(
    tiny_llama, tiny_llama_gguf: Path, q8_gguf: Path, make_prompt
) -> None:
    prompts = [make_prompt(tiny_llama, q, c) for q, c in PROMPTS]
    r = logits_parity(
        tiny_llama.model, {"f16": tiny_llama_gguf, "q8_0": q8_gguf}, prompts, n_threads=1, progress=False
    )
    assert set(r) == {"f16", "q8_0"}
    assert r["f16"]["n_positions"] == sum(len(p) for p in prompts)
    assert r["f16"]["top1_agreement"] == 1.0 and r["f16"]["max_abs_diff"] < 0.05
    assert r["q8_0"]["mean_abs_diff"] > r["f16"]["mean_abs_diff"]
    check_thresholds(r, {"f16": 0.99})
    with pytest.raises(ExportError, match="GGUF q8_0: top-1 agreement"):
        check_thresholds(r, {"q8_0": 1.01})


def test_greedy_answers_match_for_f16(tiny_llama, tiny_llama_gguf: Path, make_prompt) -> None:
    prompts = [make_prompt(tiny_llama, q, c) for q, c in PROMPTS]
    r = greedy_parity(
        tiny_llama.model,
        {"f16": tiny_llama_gguf},
        prompts,
        max_new_tokens=8,
        policy=_policy(tiny_llama.model, (0,)),
        n_threads=1,
        decode=tiny_llama.tokenizer.decode,
        progress=False,
    )
    # the random model's 8th token of the 3rd prompt is a near-tie (top-2 gap 1e-3 < f16 noise 1e-2);
    # everything before it agrees (a wrong conversion agrees on almost nothing)
    assert r["f16"]["exact_match"] >= 2 / 3 and r["f16"]["token_agreement"] >= 23 / 24, r
    assert r["f16"]["n_prompts"] == 3
    assert len(r["f16"]["examples"]) == 3 and r["f16"]["examples"][0]["hf"] == r["f16"]["examples"][0]["gguf"]


def test_greedy_stops_at_stop_token(tiny_llama, tiny_llama_gguf: Path, make_prompt) -> None:
    ids = make_prompt(tiny_llama, *PROMPTS[0])
    model = tiny_llama.model
    free = greedy_hf(model, ids, max_new_tokens=6, policy=_policy(model))
    assert len(free) == 6
    stopped = greedy_hf(model, ids, max_new_tokens=6, policy=_policy(model, (free[2],)))
    assert stopped == free[: free.index(free[2])]
    # a banned id is never produced, by either engine
    ban = _policy(model, banned=(free[0],))
    avoided = greedy_hf(model, ids, max_new_tokens=6, policy=ban)
    assert free[0] not in avoided and avoided != free
    llm = open_gguf(tiny_llama_gguf, n_ctx=64, n_threads=1)
    try:
        assert greedy_gguf(llm, ids, max_new_tokens=6, policy=_policy(model, (free[2],))) == stopped
        assert greedy_gguf(llm, ids, max_new_tokens=6, policy=ban) == avoided
    finally:
        llm.close()
