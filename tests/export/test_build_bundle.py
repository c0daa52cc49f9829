"""``diagecg export`` end to end: a real (tiny) instruct checkpoint whose ECG tokenizer has summary tokens
-> bundle -> load_bundle -> --verify."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from builders import SUMMARY, ecg_vocab_of, random_ecg_tokenizer

from diagecg.bundle import load_bundle
from diagecg.config import (
    EncoderConfig,
    FSQConfig,
    GenerationConfig,
    PreprocessConfig,
    apply_overrides,
)
from diagecg.constants import (
    BUNDLE_TOKENIZER_NAME,
    LLM_TEXT_TOKENIZER,
    ManifestKey,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("onnxscript")

from diagecg.export.build_bundle import ExportConfig, main  # noqa: E402
from diagecg.nn.checkpoint import save_checkpoint  # noqa: E402
from diagecg.nn.llm_checkpoint import BaseModelRef, LlmMeta, save_llm_checkpoint  # noqa: E402
from diagecg.prompts import PromptConfig  # noqa: E402

PREPROCESS = PreprocessConfig(fs_hz=100)
ENCODER = EncoderConfig(
    n_samples=1000, stem_channels=8, stage_channels=(8, 16, 16, 32), groups=4, fused_channels=32
)
FSQ = FSQConfig(levels=(4, 4))
N_CODES = FSQ.codebook_size + SUMMARY.n_codes  # 16 frame codes + 3 findings * 4 levels + 3 + 2 bins
CALIBRATION = {
    "atrial fibrillation": {"code": "AFIB", "a": 0.8, "b": -1.5, "threshold": 0.2, "n": 300, "n_pos": 20}
}


@pytest.fixture(scope="module")
def instruct_checkpoint(tmp_path_factory: pytest.TempPathFactory, text_tokenizer_factory) -> Path:
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    configs = {
        ManifestKey.PREPROCESS: PREPROCESS,
        ManifestKey.ENCODER: ENCODER,
        ManifestKey.FSQ: FSQ,
        ManifestKey.SUMMARY: SUMMARY,
    }
    save_checkpoint(d / "stage1", random_ecg_tokenizer(ENCODER, FSQ, SUMMARY, PREPROCESS), configs, step=0)
    tok = text_tokenizer_factory(with_ecg=True, n_codes=N_CODES)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    vocab = ecg_vocab_of(tok, 384, N_CODES, base_vocab_size=300, eos_id=0)
    base = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=384,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.1,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).eval()
    base.save_pretrained(d / "base")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(base, lora)
    meta = LlmMeta(
        stage="instruct",
        method="lora",
        vocab=vocab,
        prompt=PromptConfig(),
        generation=GenerationConfig(max_new_tokens=8),
        base_model=BaseModelRef(path=str(d / "base"), name="tiny llama", model_type="llama"),
        preset="100hz",
        train_folds=(1, 2, 3, 4, 5, 6, 7, 8),
        valid_folds=(9,),
    )
    return save_llm_checkpoint(d / "instruct", model, hf_tok, meta, d / "stage1")


def test_export_writes_a_bundle_that_loads_and_verifies(
    instruct_checkpoint: Path, shared_data: Path, tmp_path: Path
) -> None:
    # diagecg eval --set calibrate=true on fold 9, beside the checkpoint (scripts/reproduce_demo.sh)
    (instruct_checkpoint / "calibration_results.json").write_text(
        json.dumps({"folds": [9], "n_records": 300, "findings": {"calibration": CALIBRATION}})
    )
    cfg = ExportConfig(
        checkpoint_dir=str(instruct_checkpoint),
        out_dir=str(tmp_path / "bundle"),
        quants=("q8_0", "f16"),
        data_dir=str(shared_data),
        n_parity_records=3,
        n_questions=2,
        max_new_tokens=4,
        min_top1={"f16": 0.9},
        n_threads=1,
        progress=False,
    )
    summary = main(cfg)
    b = load_bundle(tmp_path / "bundle")
    # the default is the first quant asked for (manifest keys are sorted, so quants come back sorted)
    assert sorted(summary["quants"]) == sorted(b.quants) == ["f16", "q8_0"] and b.default_quant == "q8_0"
    assert (b.preprocess, b.encoder, b.fsq, b.preset) == (PREPROCESS, ENCODER, FSQ, "100hz")
    assert b.summary == SUMMARY and b.vocab.n_codes == N_CODES
    assert b.prompt == PromptConfig() and b.generation.max_new_tokens == 8
    assert b.tokenizer_path is not None and b.tokenizer_path.name == BUNDLE_TOKENIZER_NAME
    assert b.tokenizer_path.read_bytes() == (instruct_checkpoint / LLM_TEXT_TOKENIZER).read_bytes()
    assert sorted(p.name for p in b.root.iterdir()) == sorted([*b.manifest["files"], "manifest.json"])

    parity = b.parity
    assert parity["onnx"]["code_agreement"] == 1.0 and parity["onnx"]["n_records"] == 3
    assert parity["onnx"]["summary_agreement"] == 1.0
    assert parity["onnx"]["n_summary_codes"] == 3 * SUMMARY.n_tokens
    assert b.calibration == CALIBRATION and b.manifest["calibration"]["fitted_on"]["folds"] == [9]
    assert parity["lora_merge"]["merged"] and parity["lora_merge"]["max_abs_diff"] < 1e-3
    assert parity["llm"]["f16"]["logits"]["top1_agreement"] >= 0.9
    n_positions = parity["llm"]["f16"]["logits"]["n_positions"]
    assert parity["llm"]["q8_0"]["logits"]["n_positions"] == n_positions > 3 * (3 + 63)
    assert set(parity["llm"]["f16"]["greedy"]) >= {"exact_match", "token_agreement", "n_prompts"}
    assert parity["questions"][0] == PromptConfig().report_question and len(parity["records"]) == 3
    assert b.training["stage"] == "instruct" and b.training["train_folds"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert b.manifest["answer_vocabularies"]["2"] == ["no", "yes"]
    assert b.questions is not None and b.questions.match("AF?").attributes == ("atrial fibrillation",)
    assert b.manifest[ManifestKey.LLM]["q8_0"]["file_type"] == "MOSTLY_Q8_0"

    import gguf

    reader = gguf.GGUFReader(str(b.gguf_path("f16")))
    assert int(reader.get_field("tokenizer.ggml.eos_token_id").contents()) == b.vocab.eos_id == 0

    verified = main(dataclasses.replace(cfg, verify_only=True))
    assert verified["verified"]
    assert verified["llm"]["f16"]["top1_agreement"] == summary["llm"]["f16"]["top1_agreement"]
    manifest = json.loads((b.root / "manifest.json").read_text())
    assert manifest == b.manifest  # verify only reads


def test_export_refuses_a_calibration_fitted_on_the_tested_folds(tmp_path: Path) -> None:
    from diagecg.export.build_bundle import _calibration_results

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "eval_results.json").write_text(json.dumps({"folds": [10]}))
    (ck / "calibration_results.json").write_text(
        json.dumps({"folds": [10], "findings": {"calibration": CALIBRATION}})
    )
    with pytest.raises(ValueError, match="fitted on folds \\[10\\], which the evaluation tests on"):
        _calibration_results(ck)
    (ck / "calibration_results.json").write_text(json.dumps({"folds": [9], "findings": {}}))
    with pytest.raises(ValueError, match="holds no calibration"):
        _calibration_results(ck)
    (ck / "calibration_results.json").unlink()
    assert _calibration_results(ck) == {}  # none: the runtime answers with the model's own probabilities


def test_export_config_parses_and_checks_fields() -> None:
    sets = [
        "quants=Q8_0, q4_k_m",
        "default_quant=q4_k_m",
        "parity_folds=9,10",
        "min_top1.f16=0.99",
        "min_top1.q4_k_m=0.8",
    ]
    cfg = apply_overrides(ExportConfig(), sets)
    assert cfg.quants == ("q8_0", "q4_k_m") and cfg.parity_folds == (9, 10)
    assert cfg.min_top1 == {"f16": 0.99, "q8_0": 0.9, "q4_k_m": 0.8}
    assert ExportConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"ExportConfig.quants=\('q3_xs',\)"):
        ExportConfig(quants=("q3_xs",))
    with pytest.raises(ValueError, match="ExportConfig.default_quant='f16'"):
        ExportConfig(quants=("q8_0",), default_quant="f16")
    with pytest.raises(ValueError, match=r"min_top1.q8_0=1.5 is invalid: a fraction"):
        apply_overrides(ExportConfig(), ["min_top1.q8_0=1.5"])
    with pytest.raises(ValueError, match="min_top1.q3=0.5 is invalid"):
        apply_overrides(ExportConfig(), ["min_top1.q3=0.5"])
    with pytest.raises(ValueError, match="cannot parse"):
        apply_overrides(ExportConfig(), ["min_top1.f16=high"])
    # an old comma string: not read as letters
    with pytest.raises(ValueError, match=r"ExportConfig.quants='q8_0,q4_k_m' is invalid: expected a list of"):
        ExportConfig.from_dict({"quants": "q8_0,q4_k_m"})
    with pytest.raises(ValueError, match="parity_folds"):
        ExportConfig(parity_folds=(11,))


def test_stage_configs_follow_the_chain_of_training_folders(tmp_path: Path) -> None:
    """The manifest's training record holds every stage's config: instruct, its pretrain, the tokenizer."""
    from diagecg.export.build_bundle import stage_configs

    tok, pre, ins = (tmp_path / n for n in ("tokenizer", "pretrain", "instruct"))
    for d in (tok, pre, ins):
        d.mkdir()
    (tok / "config.json").write_text(json.dumps({"training": {"steps": 500, "seed": 0}}))
    (pre / "run_summary.json").write_text(json.dumps({"stage": "pretrain", "config": {"steps": 1200}}))
    summary = {"stage": "instruct", "config": {"steps": 1500}, "init_dir": "/nowhere/moved/pretrain"}
    configs = stage_configs(ins, summary, tok)
    # the pretrain folder moved with its sibling: it is found next to the instruct folder
    assert configs == {
        "instruct": {"steps": 1500},
        "pretrain": {"steps": 1200},
        "tokenizer": {"steps": 500, "seed": 0},
    }
    (pre / "run_summary.json").unlink()
    assert "pretrain" not in stage_configs(ins, summary, tok)
