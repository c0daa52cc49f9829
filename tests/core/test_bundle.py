"""BundleWriter state machine, manifest round trip, and load_bundle's validation.

The fixture bundles hold real model files: a small ONNX graph built with ``onnx.helper`` (signal
[+ features] -> indices, the bundle's I/O contract) and a GGUF converted from a tiny in-process Llama
whose tokenizer carries the ECG tokens. Bundles come in both kinds: frame tokens only (the format of
the shipped bundle) and with diagnostic summary tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from builders import SUMMARY, ecg_vocab_of, train_bpe_tokenizer

from diagecg import bundle as bundle_mod
from diagecg.bundle import BundleWriter, feature_columns, load_bundle
from diagecg.config import EncoderConfig, FSQConfig, GenerationConfig, PreprocessConfig, VocabConfig
from diagecg.constants import (
    BUNDLE_GGUF_FORMAT,
    BUNDLE_ONNX_NAME,
    BUNDLE_TOKENIZER_NAME,
    ECG_END_TOKEN,
    ECG_START_TOKEN,
    ECG_TOKEN_FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ONNX_INPUT_FEATURES,
    ONNX_INPUT_SIGNAL,
    ONNX_OUTPUT_INDICES,
)
from diagecg.errors import BundleError
from diagecg.features import FEATURE_NAMES
from diagecg.prompts import PromptConfig
from diagecg.vocab import ecg_code_ids

onnx = pytest.importorskip("onnx")
pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

PREPROCESS = PreprocessConfig(fs_hz=100)
ENCODER = EncoderConfig(n_samples=1000)
FSQ = FSQConfig(levels=(4, 4))  # 16 codes keep the tiny vocabulary small
N_CODES_SUMMARY = FSQ.codebook_size + SUMMARY.n_codes  # + 3 findings * 4 levels
PROMPT = PromptConfig(template="You read ECGs.\n{ecg}\n{question}\n")
CONFIGS = dict(preprocess=PREPROCESS, encoder=ENCODER, fsq=FSQ, prompt=PROMPT, generation=GenerationConfig())
TEXT = [
    "sinus rhythm with normal axis",
    "left ventricular hypertrophy",
    "atrial fibrillation",
    "the patient is 63 years old",
    "first degree av block",
    "no acute changes",
]


def make_onnx(
    path: Path,
    *,
    input_name: str = ONNX_INPUT_SIGNAL,
    out_dtype: int | None = None,
    n_samples: int = ENCODER.n_samples,
    n_features: int = 0,
    n_summary: int = 0,
) -> Path:
    """signal (B, 12, n) -> every 16th sample of lead I, |x|*3 floored and clipped to [0, 15] (int64);
    with ``n_features``, a second input features (B, n_features) whose first ``n_summary`` columns,
    floored and clipped alike, come first in the output."""
    from onnx import TensorProto, helper

    out_dtype = TensorProto.INT64 if out_dtype is None else out_dtype
    frames = -(-n_samples // 16)
    inits = [
        helper.make_tensor("starts", TensorProto.INT64, [2], [0, 0]),
        helper.make_tensor("ends", TensorProto.INT64, [2], [1, n_samples]),
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("steps", TensorProto.INT64, [2], [1, 16]),
        helper.make_tensor("sq_axes", TensorProto.INT64, [1], [1]),
        helper.make_tensor("three", TensorProto.FLOAT, [], [3.0]),
        helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("hi", TensorProto.FLOAT, [], [float(FSQ.codebook_size - 1)]),
    ]
    nodes = [
        helper.make_node("Slice", [input_name, "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Squeeze", ["s", "sq_axes"], ["q"]),
        helper.make_node("Abs", ["q"], ["a"]),
        helper.make_node("Mul", ["a", "three"], ["m"]),
        helper.make_node("Floor", ["m"], ["f"]),
        helper.make_node("Clip", ["f", "lo", "hi"], ["c"]),
    ]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 12, n_samples])]
    if n_features:
        inputs.append(
            helper.make_tensor_value_info(ONNX_INPUT_FEATURES, TensorProto.FLOAT, ["batch", n_features])
        )
        inits += [
            helper.make_tensor(n, TensorProto.INT64, [1], [v])
            for n, v in (("f0", 0), ("f1", n_summary), ("f_axis", 1))
        ]
        nodes += [
            helper.make_node("Slice", [ONNX_INPUT_FEATURES, "f0", "f1", "f_axis"], ["fs"]),
            helper.make_node("Floor", ["fs"], ["ff"]),
            helper.make_node("Clip", ["ff", "lo", "hi"], ["fc"]),
            helper.make_node("Concat", ["fc", "c"], ["cc"], axis=1),
        ]
    nodes.append(helper.make_node("Cast", ["cc" if n_features else "c"], [ONNX_OUTPUT_INDICES], to=out_dtype))
    graph = helper.make_graph(
        nodes,
        "tiny_ecg_tokenizer",
        inputs,
        [helper.make_tensor_value_info(ONNX_OUTPUT_INDICES, out_dtype, ["batch", n_summary + frames])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def make_tokenizer(*, special_ecg: bool, n_codes: int = FSQ.codebook_size) -> tokenizers.Tokenizer:
    tok = train_bpe_tokenizer(TEXT * 10)
    ecg = [ECG_START_TOKEN, ECG_END_TOKEN] + [ECG_TOKEN_FORMAT.format(k) for k in range(n_codes)]
    if special_ecg:
        tok.add_special_tokens(ecg)
    else:
        tok.add_tokens(ecg)
    return tok


def make_gguf(
    path: Path,
    tok: tokenizers.Tokenizer,
    *,
    control: bool = True,
    n_rows: int = 384,
    n_codes: int = FSQ.codebook_size,
) -> Path:
    from diagecg.export.gguf_convert import convert_hf_to_gguf

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=n_rows,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    v = ecg_vocab_of(tok, n_rows, n_codes)
    ids = [*range(v.offset, v.offset + v.n_codes), v.start_id, v.end_id] if control else []
    return convert_hf_to_gguf(model, tok, path, control_token_ids=ids)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("bundle_src")
    tok = make_tokenizer(special_ecg=False)  # CONTROL only through control_token_ids
    tok.save(str(d / "text_tokenizer.json"))
    tok_s = make_tokenizer(special_ecg=False, n_codes=N_CODES_SUMMARY)  # frame + summary codes
    return {
        "onnx": make_onnx(d / "enc.onnx"),
        "gguf": make_gguf(d / "llm.gguf", tok),
        "gguf_no_control": make_gguf(d / "llm_user.gguf", tok, control=False),
        "tokenizer": d / "text_tokenizer.json",
        "vocab": ecg_vocab_of(tok, 384, FSQ.codebook_size),
        "onnx_summary": make_onnx(
            d / "enc_s.onnx", n_features=len(FEATURE_NAMES), n_summary=SUMMARY.n_tokens
        ),
        "gguf_summary": make_gguf(d / "llm_s.gguf", tok_s, n_codes=N_CODES_SUMMARY),
        "vocab_summary": ecg_vocab_of(tok_s, 384, N_CODES_SUMMARY),
    }


def write_bundle(
    root: Path,
    parts: dict[str, object],
    *,
    gguf: str = "gguf",
    quants: tuple[str, ...] = ("q8_0",),
    vocab: VocabConfig | None = None,
    summary: bool = False,
    onnx_path: Path | None = None,
) -> Path:
    """A bundle of ``parts``; ``summary``: a tokenizer with summary tokens (its graph, GGUF and vocab)."""
    kind = "_summary" if summary else ""
    w = BundleWriter(root)
    w.add_config(**CONFIGS, preset="100hz", summary=SUMMARY if summary else None)
    w.add_onnx(onnx_path or parts["onnx" + kind], opset=17)
    for q in quants:
        w.add_gguf(parts["gguf_summary" if summary else gguf], q, info={"architecture": "llama"})
    w.add_tokenizer(parts["tokenizer"])
    w.add_vocab(vocab or parts["vocab" + kind])
    w.add_answer_vocabularies({"rhythm": ["sinus rhythm", "atrial fibrillation"]})
    w.add_training({"n_records": 1600, "folds": [1, 2, 3, 4, 5, 6, 7, 8]})
    w.add_evaluation({"exact_match": 0.5})
    w.add_parity({"onnx": {"code_agreement": 1.0}})
    w.write()
    return root


@pytest.fixture
def bundle_dir(tmp_path: Path, parts: dict[str, object]) -> Path:
    return write_bundle(tmp_path / "bundle", parts, quants=("f16", "q8_0"))


@pytest.fixture
def summary_bundle_dir(tmp_path: Path, parts: dict[str, object]) -> Path:
    return write_bundle(tmp_path / "summary_bundle", parts, summary=True)


def edit_manifest(root: Path, fn) -> None:
    p = root / MANIFEST_NAME
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m, indent=2, sort_keys=True))


# --- writer ------------------------------------------------------------------------------------------


def test_manifest_round_trip(bundle_dir: Path, parts: dict[str, object]) -> None:
    b = load_bundle(bundle_dir)
    assert (b.preprocess, b.encoder, b.fsq, b.vocab) == (PREPROCESS, ENCODER, FSQ, parts["vocab"])
    assert b.generation == GenerationConfig() and b.prompt == PROMPT and b.preset == "100hz"
    assert b.quants == ("f16", "q8_0") and b.default_quant == "q8_0"
    assert b.gguf_path() == bundle_dir / BUNDLE_GGUF_FORMAT.format(quant="q8_0")
    assert b.gguf_path("f16").is_file() and b.onnx_path == bundle_dir / BUNDLE_ONNX_NAME
    assert b.tokenizer_path == bundle_dir / BUNDLE_TOKENIZER_NAME
    assert b.manifest["answer_vocabularies"] == {"rhythm": ["sinus rhythm", "atrial fibrillation"]}
    assert b.training["n_records"] == 1600 and b.evaluation == {"exact_match": 0.5}
    assert list(ecg_code_ids(b.vocab)) == list(range(parts["vocab"].offset, parts["vocab"].offset + 16))
    text = (bundle_dir / MANIFEST_NAME).read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    m = b.manifest
    assert b.summary is None and m["summary"] is None and m["onnx"]["features"] is None
    assert m["format_version"] == FORMAT_VERSION and m["package_versions"]["gguf"].startswith("0.19")
    assert set(m["files"]) == {BUNDLE_ONNX_NAME, BUNDLE_TOKENIZER_NAME, "llm-f16.gguf", "llm-q8_0.gguf"}
    f = m["files"][BUNDLE_ONNX_NAME]
    assert f["bytes"] == parts["onnx"].stat().st_size and f["sha256"] == bundle_mod.sha256_file(parts["onnx"])
    with pytest.raises(BundleError, match="q4_k_m"):
        b.gguf_path("q4_k_m")


def test_writer_rejects_duplicate_parts_and_writes_only_a_complete_bundle(
    tmp_path: Path, parts: dict[str, object]
) -> None:
    cfg = CONFIGS
    w = BundleWriter(tmp_path / "b")
    with pytest.raises(ValueError, match="add_config must be called first"):
        w.add_onnx(parts["onnx"])  # the graph's sizes come from the encoder config
    with pytest.raises(ValueError, match="missing add_config, add_onnx, add_gguf, add_vocab"):
        w.write()
    w.add_config(**cfg)
    with pytest.raises(ValueError, match="add_config: already called"):
        w.add_config(**cfg)
    w.add_vocab(parts["vocab"])  # any order
    w.add_parity({"x": 1})
    w.add_onnx(parts["onnx"])
    w.add_gguf(parts["gguf"], "q8_0")
    with pytest.raises(ValueError, match="already added"):
        w.add_gguf(parts["gguf"], "q8_0")
    with pytest.raises(ValueError, match="not one of"):
        w.add_gguf(parts["gguf"], "q3_xs")
    w.add_gguf(parts["gguf"], "f16")  # another quant is fine
    with pytest.raises(ValueError, match="vocab.n_codes=1296"):
        w.add_vocab(VocabConfig(n_codes=1296))  # checked against the FSQ codebook
    with pytest.raises(ValueError, match="add_vocab: already called"):
        w.add_vocab(parts["vocab"])
    with pytest.raises(ValueError, match="default_quant"):
        w.write(default_quant="q4_k_m")
    w.write(default_quant="f16")
    with pytest.raises(ValueError, match="already written"):
        w.add_training({})
    b = load_bundle(tmp_path / "b")
    assert b.default_quant == "f16" and b.tokenizer_path is None and b.manifest["answer_vocabularies"] == {}
    assert b.parity == {"x": 1}


def test_manifest_round_trip_with_summary(summary_bundle_dir: Path, parts: dict[str, object]) -> None:
    b = load_bundle(summary_bundle_dir)
    n_codes = 16 + SUMMARY.n_codes  # frames, then 3 findings x 4 levels and the 3 + 2 measurement bins
    assert b.summary == SUMMARY and b.vocab == parts["vocab_summary"] and b.vocab.n_codes == n_codes
    assert b.manifest["summary"] == json.loads(json.dumps(SUMMARY.to_dict()))
    onnx_meta = b.manifest["onnx"]
    assert onnx_meta["features"] == ONNX_INPUT_FEATURES and onnx_meta["n_tokens"] == SUMMARY.n_tokens + 63
    assert list(ecg_code_ids(b.vocab)) == list(range(b.vocab.offset, b.vocab.offset + n_codes))


def test_old_manifest_without_a_summary_key_loads(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: m.pop("summary"))  # written before summaries existed
    assert load_bundle(bundle_dir).summary is None


def test_writer_checks_vocab_against_the_summary(tmp_path: Path, parts: dict[str, object]) -> None:
    w = BundleWriter(tmp_path / "b")
    w.add_config(**CONFIGS, summary=SUMMARY)
    w.add_onnx(parts["onnx_summary"])
    w.add_gguf(parts["gguf_summary"], "q8_0")
    with pytest.raises(
        ValueError,
        match=r"add_vocab: vocab.n_codes=16 != prod\(fsq.levels\)=16 "
        rf"\+ summary codes={SUMMARY.n_codes} "
        r"\(findings\*levels \+ measurement bins\)$",
    ):
        w.add_vocab(parts["vocab"])
    w.add_vocab(parts["vocab_summary"])


def test_writer_checks_configs(tmp_path: Path) -> None:
    w = BundleWriter(tmp_path / "b")
    with pytest.raises(ValueError, match="n_samples"):
        w.add_config(
            preprocess=PreprocessConfig(fs_hz=500),
            encoder=ENCODER,
            fsq=FSQ,
            prompt=PROMPT,
            generation=GenerationConfig(),
        )
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        w.add_config(
            preprocess=PREPROCESS,
            encoder=ENCODER,
            fsq=FSQ,
            prompt={"x": object()},
            generation=GenerationConfig(),
        )


# --- loader ------------------------------------------------------------------------------------------


def test_load_rejects_tampered_file(bundle_dir: Path) -> None:
    p = bundle_dir / "llm-q8_0.gguf"
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF  # same size, different content
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"llm-q8_0\.gguf: sha256 .* modified"):
        load_bundle(bundle_dir)
    load_bundle(bundle_dir, verify_hashes=False, check_models=False)  # sizes still agree


def test_load_rejects_truncated_file(bundle_dir: Path) -> None:
    p = bundle_dir / BUNDLE_ONNX_NAME
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(BundleError, match=r"ecg_tokenizer\.onnx: size 304 bytes != 404 .*truncated"):
        load_bundle(bundle_dir, verify_hashes=False)


def test_load_rejects_missing_file(bundle_dir: Path) -> None:
    (bundle_dir / BUNDLE_TOKENIZER_NAME).unlink()
    with pytest.raises(BundleError, match=r"tokenizer\.json: file listed in the manifest is missing"):
        load_bundle(bundle_dir)


def test_load_rejects_wrong_format_version(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleError, match=r"manifest\.json: format_version=2 is not supported"):
        load_bundle(bundle_dir)


def test_load_rejects_missing_manifest_or_field(tmp_path: Path, bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="manifest missing"):
        load_bundle(tmp_path)
    edit_manifest(bundle_dir, lambda m: m.pop("generation"))
    with pytest.raises(BundleError, match="'generation' is missing"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    "text, match",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # json.loads alone raises RecursionError
        ('{"a": ' * 40 + "1" + "}" * 40, "nested 40 levels deep"),
        ("\xff\xfe{}", "not valid JSON"),
    ],
)
def test_load_rejects_damaged_manifests_with_one_line(bundle_dir: Path, text: str, match: str) -> None:
    (bundle_dir / MANIFEST_NAME).write_text(text, encoding="latin-1")
    with pytest.raises(BundleError, match=match):
        load_bundle(bundle_dir)


def test_load_rejects_a_huge_manifest_before_reading_it(bundle_dir: Path) -> None:
    with (bundle_dir / MANIFEST_NAME).open("wb") as f:
        f.truncate(bundle_mod.MAX_MANIFEST_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(BundleError, match="too large for a manifest"):
        load_bundle(bundle_dir)


def test_load_rejects_codebook_vocab_mismatch(bundle_dir: Path, summary_bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: m["fsq"].update(levels=[6, 6, 6, 6]))
    with pytest.raises(BundleError, match=r"vocab.n_codes=16 != prod\(fsq.levels\)=1296$"):
        load_bundle(bundle_dir)
    edit_manifest(summary_bundle_dir, lambda m: m["summary"].update(levels=5))
    with pytest.raises(
        BundleError,
        match=rf"vocab.n_codes={16 + SUMMARY.n_codes} != prod\(fsq.levels\)=16 "
        rf"\+ summary codes={SUMMARY.n_codes + 3}",
    ):
        load_bundle(summary_bundle_dir)


def test_load_refuses_a_summary_trained_on_measurements_it_cannot_compute(summary_bundle_dir: Path) -> None:
    other = ["qrs_area_mvms" if f == "pr_ms" else f for f in FEATURE_NAMES]
    edit_manifest(summary_bundle_dir, lambda m: m["summary"].update(features=other))
    with pytest.raises(
        BundleError,
        match=r"summary.features name measurements this diagecg does not compute "
        r".*\['qrs_area_mvms'\]",
    ):
        load_bundle(summary_bundle_dir, check_models=False)


@pytest.mark.parametrize(
    "pick", [lambda names: names[::-1], lambda names: names[:-1]], ids=["another order", "fewer"]
)
def test_a_summary_takes_its_measurements_by_name(summary_bundle_dir: Path, pick) -> None:
    """A bundle trained on other known measurements (an older diagecg measured fewer) gets exactly the
    columns it names, in its order."""
    names = list(pick(list(FEATURE_NAMES)))
    edit_manifest(summary_bundle_dir, lambda m: m["summary"].update(features=names))
    summary = load_bundle(summary_bundle_dir, check_models=False).summary
    assert summary is not None
    columns = feature_columns(summary)
    values = np.arange(len(FEATURE_NAMES), dtype=np.float32)
    assert [FEATURE_NAMES[int(v)] for v in values[columns]] == names


def test_load_rejects_bad_config_value(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: m["generation"].update(max_new_tokens=0))
    with pytest.raises(BundleError, match="'generation'.*max_new_tokens=0"):
        load_bundle(bundle_dir)


def test_load_checks_onnx_io(tmp_path: Path, parts: dict[str, object]) -> None:
    from onnx import TensorProto

    load_bundle(write_bundle(tmp_path / "ok", parts))
    bad_name = dict(parts, onnx=make_onnx(tmp_path / "x.onnx", input_name="x"))
    with pytest.raises(BundleError, match=r"graph inputs are \['x'\], expected \['signal'\]"):
        load_bundle(write_bundle(tmp_path / "b1", bad_name))
    bad_dtype = dict(parts, onnx=make_onnx(tmp_path / "i32.onnx", out_dtype=TensorProto.INT32))
    with pytest.raises(BundleError, match=r"'indices' has dtype tensor\(int32\), expected tensor\(int64\)"):
        load_bundle(write_bundle(tmp_path / "b2", bad_dtype))
    bad_len = dict(parts, onnx=make_onnx(tmp_path / "n.onnx", n_samples=5000))
    with pytest.raises(BundleError, match="axis 2 is 5000, expected 1000"):
        load_bundle(write_bundle(tmp_path / "b3", bad_len))
    # summary tokens: the features input iff the manifest has a summary, and n_summary + frames out
    load_bundle(write_bundle(tmp_path / "s_ok", parts, summary=True))
    with pytest.raises(
        BundleError,
        match=r"graph inputs are \['signal'\], expected \['signal', 'features'\] "
        r"\(a tokenizer with summary tokens\)",
    ):
        load_bundle(write_bundle(tmp_path / "s1", parts, summary=True, onnx_path=parts["onnx"]))
    with pytest.raises(BundleError, match=r"inputs are \['signal', 'features'\], expected \['signal'\]"):
        load_bundle(write_bundle(tmp_path / "s2", parts, onnx_path=parts["onnx_summary"]))
    few = make_onnx(tmp_path / "f.onnx", n_features=10, n_summary=SUMMARY.n_tokens)
    with pytest.raises(BundleError, match="'features' axis 1 is 10, expected"):
        load_bundle(write_bundle(tmp_path / "s3", parts, summary=True, onnx_path=few))
    short = make_onnx(tmp_path / "o.onnx", n_features=len(FEATURE_NAMES), n_summary=2)
    with pytest.raises(BundleError, match=f"'indices' axis 1 is 65, expected {SUMMARY.n_tokens + 63}"):
        load_bundle(write_bundle(tmp_path / "s4", parts, summary=True, onnx_path=short))


def test_load_checks_gguf_ecg_tokens(tmp_path: Path, parts: dict[str, object]) -> None:
    v = parts["vocab"]
    with pytest.raises(BundleError, match=r"'<ecg_0000>' \(id \d+\) is not a CONTROL token"):
        load_bundle(write_bundle(tmp_path / "user", parts, gguf="gguf_no_control"))
    shifted = VocabConfig(
        n_codes=v.n_codes, offset=v.offset + 1, start_id=v.start_id, end_id=v.end_id, vocab_size=v.vocab_size
    )
    with pytest.raises(BundleError, match="is '<ecg_0001>' in the GGUF, manifest expects '<ecg_0000>'"):
        load_bundle(write_bundle(tmp_path / "shift", parts, vocab=shifted))
    wrong_size = VocabConfig(
        n_codes=v.n_codes, offset=v.offset, start_id=v.start_id, end_id=v.end_id, vocab_size=v.vocab_size + 64
    )
    with pytest.raises(BundleError, match="GGUF has 384 tokens, manifest vocab.vocab_size=448"):
        load_bundle(write_bundle(tmp_path / "size", parts, vocab=wrong_size))


def test_model_checks_without_the_runtime_name_the_extra(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    with pytest.raises(BundleError, match=r"needs onnxruntime: pip install 'diagecg\[runtime\]'"):
        load_bundle(bundle_dir)
    load_bundle(bundle_dir, check_models=False)  # e.g. `diagecg questions`


def test_a_bad_prompt_template_fails_at_load(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, lambda m: m["prompt"].update(template="Patient {age}. Question: {question}"))
    with pytest.raises(BundleError, match="'prompt'.*ecg"):
        load_bundle(bundle_dir, check_models=False)


def test_bundle_module_is_torch_free() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
        "import diagecg.bundle; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_copy_in_keeps_files_already_in_place(tmp_path: Path, parts: dict[str, object]) -> None:
    root = tmp_path / "inplace"
    root.mkdir()
    shutil.copyfile(parts["onnx"], root / BUNDLE_ONNX_NAME)
    w = BundleWriter(root)
    w.add_config(**CONFIGS)
    w.add_onnx(root / BUNDLE_ONNX_NAME)
    w.add_gguf(parts["gguf"], "q8_0")
    w.add_vocab(parts["vocab"])
    w.write()
    assert load_bundle(root).onnx_path.read_bytes() == parts["onnx"].read_bytes()
