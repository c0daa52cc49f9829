"""A tiny but real bundle, built once per test session with the export code.

Tiny ECG tokenizer (random weights) with diagnostic summary tokens (``builders.SUMMARY``: 3 summary
tokens before the 63 frame tokens; the shipped bundle in diagecg/bundles/default covers the format
without them) -> ONNX; a byte-level BPE text tokenizer trained in-process on a few sentences,
extended with the ECG tokens as the vocabulary extension lays them out (codes, then
``<ecg>``/``</ecg>``; the bundle's text tokenizer is the extended one stripped of them); a random
2-layer Llama (hidden 256) -> GGUF f16 and q8_0; all assembled by ``BundleWriter``. The Llama's
output rows of the ECG tokens are scaled up so that, unmasked, the model prefers ECG ids: the
runtime's masking is then visible in the tests. Building uses torch (the test process may); the
runtime under test does not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from builders import FIXTURE_RECORDS, QA_VOCAB, SUMMARY, random_ecg_tokenizer

from diagecg.config import EncoderConfig, FSQConfig, GenerationConfig, PreprocessConfig, VocabConfig
from diagecg.constants import DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN

N_CTX = 256
MAX_NEW_TOKENS = 12
CORPUS = [
    "sinus rhythm with normal axis and no acute changes",
    "atrial fibrillation with rapid ventricular response",
    "left bundle branch block, left axis deviation",
    "inferior myocardial infarction, possibly old",
    "Does this ECG show signs of ischemia? yes no not sure",
    "Which leads show ST elevation? lead I, lead II, lead III, aVR, aVL, aVF, V1, V2, V3, V4, V5, V6",
    "The patient is a 63 year old male, height 178 cm, weight 80 kg.",
    "Question: Answer: Report: ECG: patient: age: sex: female male unknown",
]


def _text_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tok


def build_tiny_bundle(out: Path, tmp: Path) -> Path:
    import torch
    from tokenizers import AddedToken, Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from diagecg.bundle import BundleWriter
    from diagecg.export.gguf_convert import convert_hf_to_gguf, gguf_info
    from diagecg.export.onnx_tokenizer import export_onnx_tokenizer
    from diagecg.export.quantize import quantize_gguf
    from diagecg.prompts import PromptConfig
    from diagecg.vocab import check_vocab, special_token_strings, strip_ecg_tokens

    torch.manual_seed(0)
    torch.set_num_threads(1)
    tmp.mkdir(parents=True, exist_ok=True)
    preprocess = PreprocessConfig(fs_hz=100, highpass_hz=0.5)
    encoder = EncoderConfig(
        n_samples=preprocess.n_samples,
        stem_channels=8,
        stage_channels=(8, 8, 8, 8),
        groups=4,
        fused_channels=16,
    )
    fsq = FSQConfig()
    ecg_tok = random_ecg_tokenizer(encoder, fsq, SUMMARY, preprocess)
    onnx_path = export_onnx_tokenizer(ecg_tok, encoder.n_samples, tmp / "ecg.onnx")
    n_codes = ecg_tok.n_codes  # 1296 frame codes + 12 summary codes

    # the LLM tokenizer = text tokenizer + ECG tokens, laid out as the vocabulary extension does
    llm_tok = _text_tokenizer()
    base = llm_tok.get_vocab_size(with_added_tokens=True)
    llm_tok.add_special_tokens(
        [AddedToken(s, special=True, normalized=False) for s in special_token_strings(n_codes)]
    )
    vocab = VocabConfig(
        n_codes=n_codes,
        offset=base,
        start_id=base + n_codes,
        end_id=base + n_codes + 1,
        vocab_size=base + n_codes + 2,
        base_vocab_size=base,
        bos_id=llm_tok.token_to_id(DEMO_BOS_TOKEN),
        eos_id=llm_tok.token_to_id(DEMO_EOS_TOKEN),
        pad_id=llm_tok.token_to_id(DEMO_PAD_TOKEN),
    )
    check_vocab(vocab)
    text_json = tmp / "text_tokenizer.json"
    text_json.write_text(json.dumps(strip_ecg_tokens(json.loads(llm_tok.to_str()), vocab)))
    assert Tokenizer.from_file(str(text_json)).get_vocab_size(with_added_tokens=True) == base

    cfg = LlamaConfig(
        vocab_size=vocab.vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=vocab.bos_id,
        eos_token_id=vocab.eos_id,
        pad_token_id=vocab.pad_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # make ECG ids the unmasked favourites (see module docstring)
        model.lm_head.weight[base:] *= 50.0
    f16 = convert_hf_to_gguf(
        model, llm_tok, tmp / "llm-f16.gguf", ftype="f16", control_token_ids=range(base, vocab.vocab_size)
    )
    q8 = quantize_gguf(f16, tmp / "llm-q8_0.gguf", "q8_0", n_threads=1)

    writer = BundleWriter(out)
    writer.add_config(
        preprocess=preprocess,
        encoder=encoder,
        fsq=fsq,
        prompt=PromptConfig(),
        generation=GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, n_ctx=N_CTX, max_question_chars=200),
        preset="100hz",
        summary=SUMMARY,
    )
    writer.add_onnx(onnx_path)
    writer.add_gguf(f16, "f16", info=gguf_info(f16))
    writer.add_gguf(q8, "q8_0", info=gguf_info(q8))
    writer.add_tokenizer(text_json)
    writer.add_vocab(vocab)
    writer.write(default_quant="q8_0")
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the tiny bundle (read-only by convention: copy it with ``bundle_copy`` to modify)."""
    base = tmp_path_factory.mktemp("tiny_bundle")
    return build_tiny_bundle(base / "bundle", base / "build")


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may tamper with."""
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def catalogue_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with a question catalogue (``builders.QA_VOCAB``) in its manifest."""
    from diagecg.questions import build_catalogue

    dst = tmp_path_factory.mktemp("catalogue_bundle") / "bundle"
    shutil.copytree(tiny_bundle, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["questions"] = build_catalogue(QA_VOCAB).to_dict()
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst


@pytest.fixture(scope="session")
def pipeline(tiny_bundle: Path):
    from diagecg.runtime.pipeline import DiagEcgPipeline

    pipe = DiagEcgPipeline.from_bundle(tiny_bundle, device="cpu", threads=1)
    yield pipe
    pipe.close()


@pytest.fixture(scope="session")
def record_paths(fixtures_dir: Path) -> list[Path]:
    """Real records shipped with the tests: PTB-XL 100 Hz (three), 500 Hz, and a Challenge .hea + .mat."""
    return [fixtures_dir / "records" / n for n in FIXTURE_RECORDS]
