"""Model faults (issue 23): a damaged model is an ``InferenceError`` (exit 1), never NaN in JSON; the
manifest's context size is bounded by the model before llama.cpp allocates it; threads are capped."""

from __future__ import annotations

import hashlib
import json
import resource
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from diagecg.cli import main
from diagecg.cli_options import ExitCode
from diagecg.errors import BundleError, InferenceError
from diagecg.runtime.gguf_header import read_gguf_hparams
from diagecg.runtime.pipeline import DiagEcgPipeline

QUESTION = "Is the rhythm regular?"


def _rehash(bundle: Path, name: str) -> None:
    """Record a tampered file's new size and sha256 in the manifest, as an attacker would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _poison_tensor(gguf_path: Path, tensor: str) -> None:
    """Overwrite one f32 tensor of a GGUF with NaN (a damaged file whose hash was updated)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    [t] = [t for t in reader.tensors if t.name == tensor]
    assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.tensor_type
    offset, n_bytes = int(t.data_offset), int(t.n_bytes)
    del reader  # its memory map
    data = bytearray(gguf_path.read_bytes())
    data[offset : offset + n_bytes] = np.full(n_bytes // 4, np.nan, dtype=np.float32).tobytes()
    gguf_path.write_bytes(bytes(data))


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _set_n_ctx(bundle: Path, n_ctx: object) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["generation"]["n_ctx"] = n_ctx
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _opts(bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--device", "cpu", "--threads", "1"]


@pytest.mark.parametrize("mode", ["json", "text"])
def test_nan_weights_are_an_inference_error_never_nan_in_json(
    bundle_copy: Path, record_paths: list[Path], mode: str
) -> None:
    _poison_tensor(bundle_copy / "llm-q8_0.gguf", "output_norm.weight")
    _rehash(bundle_copy, "llm-q8_0.gguf")
    args = ["infer", str(record_paths[0]), "-q", QUESTION, *_opts(bundle_copy)]
    result = CliRunner().invoke(main, [*args, "--json"] if mode == "json" else args)
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "Traceback" not in result.output
    if mode == "json":
        line = _strict_json(result.stdout)
        assert isinstance(line, dict) and line["error_type"] == "InferenceError"
        assert "non-finite logits" in line["error"] and line["confidence"] is None
    else:
        assert result.stdout == "" and "non-finite logits" in result.stderr
    with DiagEcgPipeline.from_bundle(bundle_copy, device="cpu", threads=1) as pipe:
        with pytest.raises(InferenceError, match="non-finite logits"):
            pipe.report(record_paths[0])
        with pytest.raises(InferenceError, match="non-finite logits"):  # the next call too, not a crash
            pipe.option_probabilities(record_paths[0], QUESTION, ["yes", "no"])


def test_a_nan_calibration_is_an_inference_error(
    catalogue_bundle: Path, tmp_path: Path, record_paths: list[Path]
) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(catalogue_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["calibration"] = {
        "findings": {"atrial fibrillation": {"a": float("nan"), "b": 0.0, "threshold": 0.5}}
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with DiagEcgPipeline.from_bundle(bundle, device="cpu", threads=1) as pipe:
        with pytest.raises(InferenceError, match="not finite after the bundle's calibration"):
            pipe.answer(record_paths[0], "Does this ECG show symptoms of atrial fibrillation?")


@pytest.mark.parametrize(
    "n_ctx, message",
    [
        (100_000_000, "n_ctx=100000000 is invalid"),
        (2**32 + 512, f"n_ctx={2**32 + 512} is invalid"),  # would wrap to 512 in llama.cpp's uint32
        (32, "n_ctx=32 is invalid"),
        (1e8, "n_ctx=100000000"),
    ],
)
def test_a_manifest_context_beyond_the_model_is_refused_before_allocating(
    bundle_copy: Path, record_paths: list[Path], n_ctx: object, message: str
) -> None:
    _set_n_ctx(bundle_copy, n_ctx)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    result = CliRunner().invoke(main, ["infer", str(record_paths[0]), "-q", QUESTION, *_opts(bundle_copy)])
    assert time.perf_counter() - t < 20
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.stderr and "Traceback" not in result.output
    # the peak resident memory of this process did not grow by anything like an n_ctx of 1e8 (5-8 GB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 500_000  # kB


def test_the_model_context_length_is_read_from_the_gguf_header(tiny_bundle: Path, tmp_path: Path) -> None:
    hp = read_gguf_hparams(tiny_bundle / "llm-q8_0.gguf")
    assert (hp.architecture, hp.context_length, hp.block_count, hp.embedding_length) == (
        "llama",
        1024,
        2,
        256,
    )
    assert hp.kv_cache_bytes(256) == 2 * 2 * 256 * 256 * 2
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes((tiny_bundle / "llm-q8_0.gguf").read_bytes()[:200])
    with pytest.raises(BundleError, match="truncated or damaged"):
        read_gguf_hparams(truncated)
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"GGML" + bytes(100))
    with pytest.raises(BundleError, match="not a GGUF"):
        read_gguf_hparams(not_gguf)


def test_a_kv_cache_larger_than_the_memory_is_refused(
    monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path
) -> None:
    from diagecg.runtime import llm

    hp = read_gguf_hparams(tiny_bundle / "llm-q8_0.gguf")
    monkeypatch.setattr(llm, "available_memory_bytes", lambda: hp.kv_cache_bytes(256))
    with pytest.raises(BundleError, match="KV cache"):
        llm.check_context(256, hp, tiny_bundle / "llm-q8_0.gguf")
    llm.check_context(128, hp, tiny_bundle / "llm-q8_0.gguf")  # half of it fits
