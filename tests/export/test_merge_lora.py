"""LoRA merge: the merged model's logits equal the adapter model's; NaN weights are refused."""

from __future__ import annotations

import pytest

from diagecg.errors import ExportError
from diagecg.export.merge_lora import merge_lora

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")


def _adapter_model(tiny_lm_factory):
    lm = tiny_lm_factory("llama", hidden=64, intermediate=128)
    # init_lora_weights=False: B is random too, so the adapter really changes the outputs
    cfg = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    return lm, peft.get_peft_model(lm.model, cfg)


def test_merged_logits_equal_adapter_logits(tiny_lm_factory, make_prompt) -> None:
    lm, model = _adapter_model(tiny_lm_factory)
    ids = torch.tensor([make_prompt(lm, "does this ecg show atrial fibrillation?", [1, 5, 9, 13])])
    with torch.no_grad():
        adapter = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert (adapter - base).abs().max() > 0.1  # the adapter matters
    merged, report = merge_lora(model, ids, atol=1e-4)
    assert report["max_abs_diff"] < 1e-4 and report["top1_agreement"] == 1.0
    assert report["n_tokens"] == ids.numel()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert type(merged).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, adapter, atol=1e-4)


def test_merge_refuses_nan_weights(tiny_lm_factory, make_prompt) -> None:
    lm, model = _adapter_model(tiny_lm_factory)
    ids = torch.tensor([make_prompt(lm, "sinus rhythm", [0, 1])])
    suffix = "layers.0.self_attn.q_proj.lora_B.default"
    lora_b = next(m for n, m in model.named_modules() if n.endswith(suffix))
    with torch.no_grad():
        lora_b.weight[0, 0] = float("nan")
    with pytest.raises(ExportError, match="LoRA merge failed"):
        merge_lora(model, ids)


def test_merge_rejects_bad_inputs(tiny_lm_factory) -> None:
    lm, model = _adapter_model(tiny_lm_factory)
    with pytest.raises(TypeError, match="expects a peft model"):
        merge_lora(torch.nn.Linear(2, 2), torch.zeros(1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        merge_lora(model, torch.zeros(3, dtype=torch.int64))
