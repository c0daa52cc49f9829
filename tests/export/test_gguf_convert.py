"""HF -> GGUF conversion and quantisation, checked against the HF model's own logits."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from diagecg.bpe import GPT2_PRE, detect_pre_tokenizer
from diagecg.constants import ECG_TOKEN_FORMAT
from diagecg.export.gguf_convert import build_gguf_vocab, convert_hf_to_gguf, gguf_info
from diagecg.export.parity import compare_logits, gguf_logits, hf_logits, open_gguf
from diagecg.export.quantize import quantize_gguf

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

CODES = [3, 3, 7, 12, 0, 15, 9, 9, 4, 1, 2, 11]
QUESTION = "does this ecg show atrial fibrillation?"


def gguf_tensor_names(path: Path) -> set[str]:
    return {t.name for t in gguf.GGUFReader(str(path)).tensors}


def _logit_parity(lm, path: Path, make_prompt) -> dict[str, float]:
    ids = make_prompt(lm, QUESTION, CODES)
    llm = open_gguf(path, n_ctx=64, n_threads=1)
    try:
        return compare_logits(hf_logits(lm.model, ids), gguf_logits(llm, ids))
    finally:
        llm.close()


@pytest.mark.parametrize("arch", ["llama", "llama-tied", "qwen2", "mistral"])
def test_f16_gguf_logits_match_hf(arch: str, tiny_lm_factory, make_prompt, tmp_path: Path) -> None:
    # a missing/wrong q/k rotary permutation gives |diff| of several logits and top-1 agreement < 0.5
    lm = tiny_lm_factory(arch)
    path = convert_hf_to_gguf(
        lm.model, lm.tokenizer, tmp_path / f"{arch}.gguf", control_token_ids=lm.control_ids
    )
    r = _logit_parity(lm, path, make_prompt)
    assert r["logit_range"] > 5, r  # the tiny model's logits are spread enough to expose errors
    assert r["max_abs_diff"] < 0.05 and r["top1_agreement"] == 1.0, r
    info = gguf_info(path)
    assert info["architecture"] == ("qwen2" if arch == "qwen2" else "llama")
    tied = lm.model.config.tie_word_embeddings
    assert tied == (arch in ("llama-tied", "qwen2"))
    assert ("output.weight" in gguf_tensor_names(path)) != tied  # tied: llama.cpp reuses token_embd
    assert info["n_vocab"] == lm.model.get_input_embeddings().weight.shape[0]
    assert info["tokenizer_pre"] == GPT2_PRE


def test_quantized_gguf_logits_close(tiny_llama, tiny_llama_gguf: Path, make_prompt, tmp_path: Path) -> None:
    q8 = quantize_gguf(tiny_llama_gguf, tmp_path / "q8_0.gguf", "q8_0", n_threads=1)
    q4 = quantize_gguf(tiny_llama_gguf, tmp_path / "q4_k_m.gguf", "q4_k_m", n_threads=1)
    assert gguf_info(q8)["file_type"] == "MOSTLY_Q8_0" and gguf_info(q4)["file_type"] == "MOSTLY_Q4_K_M"
    assert q4.stat().st_size < q8.stat().st_size < tiny_llama_gguf.stat().st_size
    r8 = _logit_parity(tiny_llama, q8, make_prompt)
    r4 = _logit_parity(tiny_llama, q4, make_prompt)
    # random weights at std 0.1 make activations large, and llama.cpp also rounds activations to 8 bits
    # on CPU: the tiny model is a harsh case (real checkpoints: see the bundle's parity section)
    assert r8["mean_abs_diff"] < 0.1 and r8["max_abs_diff"] < 1.0 and r8["top1_agreement"] >= 0.8, r8
    assert r4["mean_abs_diff"] < 1.0 and r4["top1_agreement"] >= 0.3, r4  # unrelated logits: mean ~2
    assert r4["mean_abs_diff"] > r8["mean_abs_diff"]


def test_gguf_vocab_size_equals_embedding_rows(tiny_llama, tiny_llama_gguf: Path) -> None:
    reader = gguf.GGUFReader(str(tiny_llama_gguf))
    tokens = reader.get_field("tokenizer.ggml.tokens")
    types = reader.get_field("tokenizer.ggml.token_type")
    n_rows = tiny_llama.model.get_input_embeddings().weight.shape[0]
    assert len(tokens.data) == n_rows == 384 and tiny_llama.tokenizer.get_vocab_size() < n_rows
    pad_id = n_rows - 1
    assert bytes(tokens.parts[tokens.data[pad_id]]).decode() == f"[PAD{pad_id}]"
    assert int(types.parts[types.data[pad_id]][0]) == gguf.TokenType.UNUSED
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert list(emb.shape) == [256, n_rows]


def test_ecg_tokens_are_control_and_cannot_be_typed(tiny_llama, tiny_llama_gguf: Path) -> None:
    import llama_cpp

    v = tiny_llama.vocab
    llm = llama_cpp.Llama(model_path=str(tiny_llama_gguf), vocab_only=True, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        for token_id in tiny_llama.control_ids:
            assert llama_cpp.llama_vocab_get_attr(vocab, token_id) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        ecg1 = v.offset + 1
        assert llm.detokenize([ecg1], special=True) == ECG_TOKEN_FORMAT.format(1).encode()
        typed = llm.tokenize(ECG_TOKEN_FORMAT.format(1).encode(), add_bos=False, special=False)
        assert ecg1 not in typed and len(typed) > 1
        assert llm.tokenize(b"<ecg> x </ecg>", add_bos=False, special=False)[0] != v.start_id
        assert llm.tokenize(ECG_TOKEN_FORMAT.format(1).encode(), add_bos=False, special=True) == [ecg1]
        # plain text tokenizes as the HF tokenizer does (same pre-tokenizer and merges)
        text = "sinus rhythm with left ventricular hypertrophy"
        assert llm.tokenize(text.encode(), add_bos=False) == tiny_llama.tokenizer.encode(text).ids
    finally:
        llm.close()


def test_unmapped_tensor_raises(tiny_lm_factory, tmp_path: Path) -> None:
    lm = tiny_lm_factory("llama", hidden=64, intermediate=128)
    lm.model.model.register_parameter("ecg_adapter", torch.nn.Parameter(torch.zeros(4, 4)))
    with pytest.raises(ValueError, match="cannot map tensor 'model.ecg_adapter' of llama"):
        convert_hf_to_gguf(lm.model, lm.tokenizer, tmp_path / "x.gguf")


def test_converter_rejects_unsupported_inputs(tiny_llama, tmp_path: Path) -> None:
    fake = SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))
    with pytest.raises(ValueError, match="model_type='gpt2' is not supported"):
        convert_hf_to_gguf(fake, tiny_llama.tokenizer, tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="ftype='q8_0' is not supported"):
        convert_hf_to_gguf(tiny_llama.model, tiny_llama.tokenizer, tmp_path / "x.gguf", ftype="q8_0")
    with pytest.raises(ValueError, match=r"control_token_ids \[999\] are not in the tokenizer"):
        convert_hf_to_gguf(
            tiny_llama.model, tiny_llama.tokenizer, tmp_path / "x.gguf", control_token_ids=[999]
        )
    with pytest.raises(ValueError, match="embedding has only 100 rows"):
        build_gguf_vocab({"model": {"type": "BPE", "vocab": {"a": 0, "b": 150}}}, 100)
    with pytest.raises(ValueError, match="byte_fallback"):
        build_gguf_vocab({"model": {"type": "BPE", "vocab": {}, "byte_fallback": True}}, 10)


def test_detect_pre_tokenizer() -> None:
    split = {"type": "Split", "pattern": {"Regex": None}, "behavior": "Isolated"}
    byte_level = {"type": "ByteLevel", "use_regex": False}
    qwen2 = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
        r"\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    llama3 = qwen2.replace(r"\p{L}+|\p{N}|", r"\p{L}+|\p{N}{1,3}|")

    def seq(regex: str) -> dict:
        return {
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [dict(split, pattern={"Regex": regex}), byte_level],
            }
        }

    assert detect_pre_tokenizer({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    assert detect_pre_tokenizer(seq(qwen2)) == "qwen2"
    assert detect_pre_tokenizer(seq(llama3)) == "llama-bpe"
    with pytest.raises(ValueError, match="cannot map pre-tokenizer regex"):
        detect_pre_tokenizer(seq(r"\w+"))
    with pytest.raises(ValueError, match=r"cannot map pre-tokenizer \['Metaspace'\]"):
        detect_pre_tokenizer({"pre_tokenizer": {"type": "Metaspace"}})


def test_quantize_rejects_incompatible_row_widths(tiny_lm_factory, tmp_path: Path) -> None:
    lm = tiny_lm_factory("llama", hidden=96, intermediate=192)  # multiples of 32, not of 256
    src = convert_hf_to_gguf(lm.model, lm.tokenizer, tmp_path / "f16.gguf", control_token_ids=lm.control_ids)
    with pytest.raises(ValueError, match=r"q4_k_m needs row widths that are multiples of 256; .*\(96\)"):
        quantize_gguf(src, tmp_path / "q4.gguf", "q4_k_m")
    assert not (tmp_path / "q4.gguf").exists()
    out = quantize_gguf(src, tmp_path / "q4.gguf", "q4_k_m", allow_fallback=True, n_threads=1)
    assert gguf_info(out)["file_type"] == "MOSTLY_Q4_K_M"
    quantize_gguf(src, tmp_path / "q8.gguf", "q8_0", n_threads=1)  # 96 is a multiple of 32
    with pytest.raises(ValueError, match="quant='q3_xs' is not supported"):
        quantize_gguf(src, tmp_path / "x.gguf", "q3_xs")
    lm40 = tiny_lm_factory("llama", hidden=80, intermediate=160)
    src40 = convert_hf_to_gguf(lm40.model, lm40.tokenizer, tmp_path / "f16b.gguf")
    with pytest.raises(ValueError, match="q8_0 needs row widths that are multiples of 32"):
        quantize_gguf(src40, tmp_path / "q8b.gguf", "q8_0")


def test_gguf_logits_cover_every_position_deterministically(
    tiny_llama, tiny_llama_gguf: Path, make_prompt
) -> None:
    ids = make_prompt(tiny_llama, QUESTION, CODES)
    llm = open_gguf(tiny_llama_gguf, n_ctx=64, n_threads=1)
    try:
        a, b = gguf_logits(llm, ids), gguf_logits(llm, ids)
    finally:
        llm.close()
    assert a.shape == (len(ids), 384) and np.array_equal(a, b)


def _real_texts(shared_data: Path, n_reports: int = 200) -> list[str]:
    import csv

    with (shared_data / "ptbxl" / "scp_statements.csv").open(newline="", encoding="utf-8") as f:
        texts = [row["SCP-ECG Statement Description"] for row in csv.DictReader(f)]
    with (shared_data / "ptbxl" / "ptbxl_labels.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n_reports]
    texts += [row["report"] for row in rows if row["report"]]
    return [t for t in texts if t.strip()]


def test_llama_cpp_tokenizes_real_text_like_hf(shared_data: Path, tmp_path: Path) -> None:
    """A demo-style tokenizer (GPT-2 byte-level BPE, BOS added by a post-processor) on real English
    statement descriptions and German PTB-XL reports: llama.cpp must give the HF ids, BOS included."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    transformers = pytest.importorskip("transformers")
    texts = _real_texts(shared_data)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]
    tok.train_from_iterator(
        texts[::2],
        trainers.BpeTrainer(
            vocab_size=800,
            special_tokens=specials,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    cfg = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=256,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    path = convert_hf_to_gguf(
        model, tok, tmp_path / "demo.gguf", bos_token_id=0, eos_token_id=1, pad_token_id=2
    )
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("tokenizer.ggml.add_bos_token").contents() is True
    assert reader.get_field("tokenizer.ggml.eos_token_id").contents() == 1

    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        held_out = texts[1::2]  # not seen by the BPE trainer: unknown words split into bytes and merges
        mismatched = [t for t in held_out if llm.tokenize(t.encode(), add_bos=True) != tok.encode(t).ids]
    finally:
        llm.close()
    assert len(held_out) > 100 and not mismatched, mismatched[:3]
