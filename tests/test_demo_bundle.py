"""The shipped demonstration bundle: it loads with full verification, answers on the example records,
and its manifest records the training configs that scripts/reproduce_demo.sh uses (issue #5).

It is the format without diagnostic summary tokens (no ``summary`` in its manifest, an ONNX graph
with the signal input only), which must keep loading and answering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diagecg.bundle import load_bundle
from diagecg.constants import DEFAULT_BUNDLE_DIR, ManifestKey

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "diagecg" / DEFAULT_BUNDLE_DIR
EXAMPLES = sorted((REPO / "examples" / "records").glob("*.hea"))
CONFIGS = REPO / "configs" / "demo"
# where a stage reads data from and writes to is given on the reproduction script's command line
PATH_FIELDS = {"data_dir", "out_dir", "init_dir", "checkpoint_dir", "out_file"}


@pytest.fixture(scope="module")
def pipeline():
    from diagecg.runtime.pipeline import DiagEcgPipeline

    with DiagEcgPipeline.from_bundle(BUNDLE, device="cpu", threads=1) as pipe:
        yield pipe


def test_shipped_bundle_loads_and_verifies_every_hash() -> None:
    bundle = load_bundle(BUNDLE, verify_hashes=True, check_models=True)
    assert bundle.preset == "100hz" and bundle.summary is None
    assert bundle.default_quant in bundle.quants


def test_example_records_are_answered_deterministically(pipeline) -> None:
    assert len(EXAMPLES) >= 3
    question = "Does this ECG show symptoms of non-diagnostic t abnormalities?"
    for path in EXAMPLES:
        first = pipeline.answer(path, question)
        assert first.answer.strip(), f"empty answer for {path.name}"
        assert first.n_ecg_tokens == 63  # frame tokens only
        assert set(first.answers) <= {"yes", "no", "not sure"}, first.answer
        assert pipeline.answer(path, question).answer == first.answer
        report = pipeline.report(path)
        assert len(report.answer.split()) >= 2, report.answer


@pytest.mark.xfail(strict=True, reason="configs/demo/tokenizer.json describes the summary-token tokenizer "
                   "(d74af4e); the shipped bundle predates it until it is re-exported: then drop this mark")
def test_reproduction_configs_match_the_manifest() -> None:
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    stages = manifest[ManifestKey.TRAINING]["stage_configs"]
    for stage in ("tokenizer", "pretrain", "instruct"):
        script_cfg = json.loads((CONFIGS / f"{stage}.json").read_text())
        shipped = stages[stage]
        for key in sorted(set(script_cfg) - PATH_FIELDS):
            assert shipped.get(key) == script_cfg[key], (stage, key, script_cfg[key], shipped.get(key))


def test_manifest_evaluation_beats_the_majority_baseline_on_verify_and_choose() -> None:
    """Issue #5's bar, on the held-out fold with the ECG-QA template wordings. The held-out paraphrase
    wordings are recorded too; the tiny demonstration model does not generalise to them (see README)."""
    manifest = json.loads((BUNDLE / "manifest.json").read_text())
    qa = manifest[ManifestKey.EVALUATION]["qa"]
    assert set(qa) == {"template", "paraphrase"}
    assert manifest[ManifestKey.EVALUATION]["folds"] == [10]
    for group in ("single-verify", "single-choose"):
        row = qa["template"]["groups"][group]
        assert row["model"] > row["majority_template"], (group, row)
