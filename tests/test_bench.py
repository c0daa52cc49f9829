"""bench/runtime.py: the statistics and comparison on hand-made results, and a smoke run on a tiny real model.

The smoke run builds a tiny instruct checkpoint (random 2-layer Llama, vocabulary extended with the
ECG tokens, a LoRA adapter) and exports it with the real ``diagecg export`` (ONNX + Q8_0 + Q4_K_M
GGUF), then runs the benchmark on 2 held-out records. It checks that every metric is there and
that agreement and exact match are what the predictions say; it never checks a timing value.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from diagecg.answers import format_answer, normalize_answer

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "runtime.py"


def _load_bench(path: Path = BENCH, name: str = "bench_runtime"):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


# --- pure parts -----------------------------------------------------------------------------------------


def test_percentiles_match_numpy_linear_interpolation():
    np = pytest.importorskip("numpy")
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.5]
    for q in (0, 10, 50, 90, 100):
        assert bench.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    stats = bench.latency_stats([0.010, 0.030, 0.020])
    assert stats["n"] == 3 and stats["median"] == pytest.approx(20.0) and stats["p90"] == pytest.approx(28.0)
    assert stats["min"] == pytest.approx(10.0) and stats["max"] == pytest.approx(30.0)
    assert math.isnan(bench.latency_stats([])["median"])
    with pytest.raises(ValueError, match="empty"):
        bench.percentile([], 50)


def test_agreement_compares_normalised_answer_sets():
    torch_answers = ["yes", "atrial fibrillation; sinus rhythm", "no", "none"]
    runtime = ["Yes", "sinus rhythm, atrial fibrillation", "yes", None]  # None: the item failed
    assert bench.agreement(runtime, torch_answers) == pytest.approx(0.5)
    assert bench.agreement(torch_answers, torch_answers) == 1.0
    gold = [["yes"], ["atrial fibrillation", "sinus rhythm"], ["yes"], ["none"]]
    assert bench.exact_match(runtime, gold) == pytest.approx(0.75)
    assert bench.exact_match(torch_answers, gold) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="predictions"):
        bench.agreement(["yes"], [])


def _result(
    median_ms: float,
    rss_mb: float,
    predictions: list[str | None],
    quant: str | None,
    first_ms: float | None = None,
) -> dict:
    first_ms = 2 * median_ms if first_ms is None else first_ms
    return {
        "quant": quant,
        "cold_start_s": 1.0,
        "latency_ms": {"median": median_ms, "p90": 2 * median_ms},
        "latency_first_ms": {"median": first_ms},
        "latency_followup_ms": {"median": median_ms / 2},
        "batch": {"records_per_s": 1.0},
        "peak_rss_mb": rss_mb,
        "predictions": predictions,
    }


def test_compare_gives_ratios_against_pytorch_and_the_targets():
    gold = [["yes"], ["no"], ["no"], ["sinus rhythm"]]
    backends = {
        bench.TORCH: _result(600.0, 3000.0, ["yes", "no", "yes", "sinus rhythm"], None),  # 75 %
        "runtime-q8_0": _result(100.0, 900.0, ["yes", "no", "yes", "sinus rhythm"], "q8_0", first_ms=400.0),
        "runtime-q4_k_m": _result(150.0, 1100.0, ["yes", "yes", "yes", "sinus rhythm"], "q4_k_m"),  # 50 %
        "runtime-q4_0": {"error": "exit status 1: boom"},
    }
    cmp = bench.compare(backends, gold)
    assert cmp[bench.TORCH]["agreement"] is None and cmp[bench.TORCH]["targets"] == {}
    assert cmp[bench.TORCH]["exact_match"] == pytest.approx(0.75)
    q8 = cmp["runtime-q8_0"]
    assert q8["agreement"] == 1.0 and q8["speedup_per_question"] == pytest.approx(6.0)
    assert q8["speedup_first_question"] == pytest.approx(1200.0 / 400.0)  # reported, no target
    assert q8["memory_fraction"] == pytest.approx(0.3) and q8["accuracy_delta_points"] == pytest.approx(0.0)
    assert q8["speedup_followup_question"] == pytest.approx(6.0)  # 300 / 50
    passed = {k: t["pass"] for k, t in q8["targets"].items()}
    assert passed == {"speedup_first": True, "speedup_followup": True, "memory": True, "accuracy": True}
    q4 = cmp["runtime-q4_k_m"]
    assert q4["agreement"] == pytest.approx(0.75) and q4["accuracy_delta_points"] == pytest.approx(-25.0)
    # 1200/300 = 4x first (>= 2x), 300/75 = 4x later (short of 5x), 1100/3000 is above 1/3; no accuracy
    # target for Q4_K_M
    assert {k: t["pass"] for k, t in q4["targets"].items()} == {
        "speedup_first": True,
        "speedup_followup": False,
        "memory": False,
    }
    assert cmp["runtime-q4_0"]["agreement"] is None and cmp["runtime-q4_0"]["targets"] == {}

    worse = dict(backends, **{"runtime-q8_0": _result(100.0, 900.0, ["yes", "yes", "yes", "x"], "q8_0")})
    assert bench.compare(worse, gold)["runtime-q8_0"]["targets"]["accuracy"]["pass"] is False

    # a question the runtime refuses (outside its catalogue) is counted apart, not as a wrong answer:
    # the accuracy target compares both backends on the questions the runtime answered
    refusing = _result(100.0, 900.0, ["yes", "no", "", "sinus rhythm"], "q8_0")
    refusing["unsupported"] = [2]
    row = bench.compare(dict(backends, **{"runtime-q8_0": refusing}), gold)["runtime-q8_0"]
    assert row["n_refused"] == 1 and row["exact_match"] == pytest.approx(0.75)
    assert row["exact_match_answered"] == pytest.approx(1.0)  # torch on the same three: 3/3
    assert row["accuracy_delta_points"] == pytest.approx(0.0) and row["targets"]["accuracy"]["pass"]

    report = {
        "workload": {"n_questions": 4, "n_records": 2, "folds": [10], "batch_question": "q?"},
        "config": {"threads": 2},
        "backends": backends,
        "comparison": cmp,
    }
    table = bench.format_table(report)
    assert "runtime-q4_0" in table and "FAILED: exit status 1: boom" in table
    q8_row = next(line for line in table.splitlines() if line.startswith("runtime-q8_0 "))
    assert q8_row.split()[-7:] == ["100.0", "75.0", "6.00x", "3.00x", "6.00x", "0.300", "0"]  # 0 refused
    assert q8_row.split()[4:6] == ["400.0", "50.0"]  # first question about a record, follow-ups
    assert table.count("PASS") == 5 and table.count("FAIL") == 3  # 2 target FAILs + the FAILED worker
    assert "refused" in table.splitlines()[1]


def test_speedups_count_only_the_questions_the_runtime_answered():
    """A refused question (milliseconds, no model) must not flatter the ratio; the first answered question
    about a record is the one that pays for its prefill, even when a refused one came before it."""
    records = ["a", "a", "a", "b", "b"]
    torch = {"latency_items_ms": [600.0, 600.0, 600.0, 600.0, 600.0]}
    runtime = {"latency_items_ms": [3.0, 300.0, 100.0, 300.0, 100.0]}  # item 0 refused
    out = bench.answered_speedups(torch, runtime, [1, 2, 3, 4], records)
    assert out["speedup_first_question"] == pytest.approx(2.0)  # items 1 and 3
    assert out["speedup_followup_question"] == pytest.approx(6.0)  # items 2 and 4
    assert out["speedup_per_question"] == pytest.approx(600.0 / 200.0)
    backends = {
        bench.TORCH: {**_result(600.0, 3000.0, ["yes"] * 5, None), **torch},
        "runtime-q8_0": {
            **_result(100.0, 900.0, ["", "yes", "yes", "yes", "yes"], "q8_0"),
            **runtime,
            "unsupported": [0],
        },
    }
    row = bench.compare(backends, [["yes"]] * 5, records)["runtime-q8_0"]
    assert row["refused_ms"] == pytest.approx(3.0) and row["speedup_first_question"] == pytest.approx(2.0)
    whole = bench.compare(backends, [["yes"]] * 5)["runtime-q8_0"]  # without records: whole medians
    assert whole["speedup_per_question"] == pytest.approx(6.0)


def test_latency_is_split_at_the_first_question_about_each_record():
    records = ["a", "a", "b", "b", "b", "a", "c"]
    assert bench.first_of_record(records) == [True, False, True, False, False, False, True]
    split = bench.split_latency(
        [0.010, 0.002, 0.020, 0.004, 0.006, 0.001, 0.030], bench.first_of_record(records)
    )
    assert split["latency_first_ms"]["n"] == 3 and split["latency_first_ms"]["median"] == pytest.approx(20.0)
    assert split["latency_followup_ms"]["n"] == 4
    assert split["latency_followup_ms"]["median"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="flags"):
        bench.split_latency([0.1], [])


def test_without_a_pytorch_result_there_are_no_ratios():
    backends = {bench.TORCH: {"error": "timed out"}, "runtime-q8_0": _result(1.0, 1.0, ["yes"], "q8_0")}
    cmp = bench.compare(backends, [["yes"]])
    assert cmp["runtime-q8_0"]["exact_match"] == 1.0
    assert cmp["runtime-q8_0"]["speedup_per_question"] is None and cmp["runtime-q8_0"]["targets"] == {}


def test_peak_rss_is_the_workers_own_not_its_parents():
    """On Linux, exec() carries the parent's peak RSS into the child's ru_maxrss; peak_rss_mb must not."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("VmHWM is Linux-only")
    blob = b"\x01" * (300 * 1024 * 1024)  # the parent's peak is now > 300 MB
    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('b', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); sys.modules['b'] = m; spec.loader.exec_module(m); "
        "print(m.peak_rss_mb(), m.ru_maxrss_mb())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, check=True)
    del blob
    peak, ru_maxrss = map(float, out.stdout.split())
    assert peak < 150 < 300 < ru_maxrss  # a bare interpreter + the bench module is well under 150 MB


# --- a smoke run on a tiny real model -------------------------------------------------------------------


def build_tiny_instruct(d: Path) -> Path:
    """A real instruct folder: tiny ECG tokenizer with summary tokens, Llama (rows of 256/512 values: the
    K-quants apply) with the ECG tokens added by the vocabulary extension, and a non-trivial LoRA adapter."""
    import peft
    import torch
    from builders import (
        INSTRUCT_CORPUS,
        SUMMARY,
        demo_text_tokenizer,
        llama_with_ecg_tokens,
        save_random_ecg_tokenizer,
    )

    from diagecg.config import GenerationConfig
    from diagecg.constants import DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN
    from diagecg.datasets.ptbxl import TRAIN_FOLDS
    from diagecg.nn.llm_checkpoint import BaseModelRef, LlmMeta, save_llm_checkpoint
    from diagecg.prompts import PromptConfig
    from diagecg.training.base_model import tiny_model_config

    torch.manual_seed(0)
    fsq = save_random_ecg_tokenizer(d / "stage1", SUMMARY)
    text_tok, hf_tok, ids = demo_text_tokenizer(INSTRUCT_CORPUS * 4)
    cfg = tiny_model_config(
        text_tok.get_vocab_size(),
        bos_id=ids[DEMO_BOS_TOKEN],
        eos_id=ids[DEMO_EOS_TOKEN],
        pad_id=ids[DEMO_PAD_TOKEN],
        hidden_size=256,
        intermediate_size=512,
        num_layers=2,
        num_heads=4,
    )
    model, vocab = llama_with_ecg_tokens(cfg, hf_tok, fsq.codebook_size + SUMMARY.n_codes)
    model.save_pretrained(d / "base")  # the LoRA base: already extended, as after `train pretrain`
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    meta = LlmMeta(
        stage="instruct",
        method="lora",
        vocab=vocab,
        prompt=PromptConfig(),
        generation=GenerationConfig(max_new_tokens=6, n_ctx=256),
        base_model=BaseModelRef(path=str(d / "base"), name="tiny llama", model_type="llama"),
        preset="100hz",
        train_folds=TRAIN_FOLDS,
        valid_folds=(9,),
    )
    return save_llm_checkpoint(d / "instruct", peft.get_peft_model(model, lora), hf_tok, meta, d / "stage1")


@pytest.fixture(scope="module")
def model_pair(tmp_path_factory, shared_data) -> tuple[Path, Path]:
    pytest.importorskip("peft")
    pytest.importorskip("onnxscript")
    import torch

    from diagecg.export.build_bundle import ExportConfig
    from diagecg.export.build_bundle import main as export

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("bench_model")
    ckpt = build_tiny_instruct(d)
    export(
        ExportConfig(
            checkpoint_dir=str(ckpt),
            out_dir=str(d / "bundle"),
            quants=("q8_0", "q4_k_m"),
            data_dir=str(shared_data),
            n_parity_records=2,
            n_questions=1,
            min_top1={},
            n_threads=1,
            progress=False,
        )
    )
    return ckpt, d / "bundle"


def _run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=600)


def _bench_ok(model_pair, shared_data, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the bench on the tiny model pair with 1 thread; it must succeed; returns its report too."""
    ckpt, bundle = model_pair
    proc = _run_bench(
        "--checkpoint",
        str(ckpt),
        "--bundle",
        str(bundle),
        "--data",
        str(shared_data),
        "--threads",
        "1",
        "--torch-batch-size",
        "2",
        "--out",
        str(out),
        *args,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_bench_reports_every_metric_for_each_backend(model_pair, shared_data, tmp_path):
    from diagecg.datasets.ptbxl import PtbxlDataset

    ckpt, bundle = model_pair
    proc, report = _bench_ok(
        model_pair,
        shared_data,
        tmp_path / "results.json",
        "--n-records",
        "2",
        "--max-questions",
        "3",
        "--quants",
        "q8_0,q4_k_m",
    )
    names = [bench.TORCH, "runtime-q8_0", "runtime-q4_k_m", "runtime-q8_0-nocache"]
    assert sorted(report["backends"]) == sorted(names)

    w = report["workload"]
    assert w["n_records"] == 2 and w["n_questions"] == 3 and w["folds"] == [10]
    ptbxl = PtbxlDataset(shared_data / "ptbxl")
    assert {ptbxl.entries[q["ecg_id"]].strat_fold for q in w["questions"]} == {10}
    gold = [q["answers"] for q in w["questions"]]

    for name in names:
        res = report["backends"][name]
        assert "error" not in res, res
        for key in ("cold_start_s", "import_s", "load_s", "first_answer_s", "peak_rss_mb"):
            assert math.isfinite(res[key]) and res[key] > 0, (name, key)
        assert res["latency_ms"]["n"] == 3
        assert res["latency_first_ms"]["n"] + res["latency_followup_ms"]["n"] == 3
        assert res["latency_ms"]["p90"] >= res["latency_ms"]["median"] > 0
        assert res["batch"]["n_records"] == 2 and res["batch"]["records_per_s"] > 0
        assert len(res["predictions"]) == 3 and res["errors"] == []
        assert all(isinstance(p, str) and "<ecg" not in p for p in res["predictions"])
    for name in names[1:]:
        assert report["backends"][name]["torch_imported"] == []  # the runtime worker stayed torch-free

    torch_preds = report["backends"][bench.TORCH]["predictions"]
    for name in names:
        cmp, preds = report["comparison"][name], report["backends"][name]["predictions"]
        expected = (
            sum(
                normalize_answer(p) == normalize_answer(format_answer(g))
                for p, g in zip(preds, gold, strict=True)
            )
            / 3
        )
        assert cmp["exact_match"] == pytest.approx(expected)
        if name == bench.TORCH:
            assert cmp["agreement"] is None and cmp["targets"] == {}
            continue
        same = sum(
            normalize_answer(a) == normalize_answer(b) for a, b in zip(preds, torch_preds, strict=True)
        )
        assert cmp["agreement"] == pytest.approx(same / 3)
        for key in ("speedup_per_question", "memory_fraction", "accuracy_delta_points"):
            assert math.isfinite(cmp[key]), (name, key)
        # each target's verdict is its value against its bound, as printed
        for target, key, bound in (
            ("speedup_first", "speedup_first_question", bench.TARGET_SPEEDUP_FIRST),
            ("speedup_followup", "speedup_followup_question", bench.TARGET_SPEEDUP_FOLLOWUP),
        ):
            value = cmp[key]  # None when the backend answered no such question (3 questions, 2 records)
            assert cmp["targets"][target]["pass"] == (value is not None and value >= bound), (name, target)
        assert cmp["targets"]["memory"]["pass"] == (cmp["memory_fraction"] <= bench.TARGET_MEMORY_FRACTION)
    assert report["backends"]["runtime-q8_0-nocache"]["cache"] is False
    assert report["backends"]["runtime-q8_0"]["cache"] is True
    # caching changes no answer (Q8_0 logits are bitwise those of a fresh evaluation)
    assert (
        report["backends"]["runtime-q8_0"]["predictions"]
        == report["backends"]["runtime-q8_0-nocache"]["predictions"]
    )
    assert "accuracy" in report["comparison"]["runtime-q8_0"]["targets"]
    assert "accuracy" not in report["comparison"]["runtime-q4_k_m"]["targets"]
    for name in names:
        assert any(line.startswith(name + " ") for line in proc.stdout.splitlines()), proc.stdout
    assert (
        "targets (against PyTorch measured in this run; speed-ups on the questions each backend answered):"
    ) in proc.stdout

    # the worker's runtime answers are the pipeline's own (labels' patient features in the prompt)
    from diagecg.runtime.pipeline import DiagEcgPipeline

    q = w["questions"][0]
    rec = bench._record(
        {
            "record": str(ptbxl.record_path(q["ecg_id"]).with_suffix(".hea")),
            "patient": bench._patient_dict(ptbxl.entries[q["ecg_id"]].patient),
        }
    )
    with DiagEcgPipeline.from_bundle(bundle, quant="q8_0", device="cpu", threads=1) as pipe:
        assert pipe.answer(rec, q["question"]).answer == report["backends"]["runtime-q8_0"]["predictions"][0]


@pytest.mark.slow
def test_bench_refuses_a_quant_the_bundle_lacks(model_pair, shared_data, tmp_path):
    ckpt, bundle = model_pair
    proc = _run_bench(
        "--checkpoint",
        str(ckpt),
        "--bundle",
        str(bundle),
        "--data",
        str(shared_data),
        "--quants",
        "q8_0,q6_k",
        "--out",
        str(tmp_path / "r.json"),
    )
    assert proc.returncode == 2
    assert "no GGUF for ['q6_k']" in proc.stderr and not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_bench_report_task_asks_the_bundle_report_question_once_per_record(model_pair, shared_data, tmp_path):
    _, bundle = model_pair
    proc, report = _bench_ok(
        model_pair,
        shared_data,
        tmp_path / "results.json",
        "--task",
        "report",
        "--n-records",
        "2",
        "--quants",
        "q8_0",
        "--nocache-quants",
        "",
    )
    assert sorted(report["backends"]) == [bench.TORCH, "runtime-q8_0"]
    w = report["workload"]
    assert w["task"] == "report" and w["n_questions"] == 2
    question = json.loads((bundle / "manifest.json").read_text())["prompt"]["report_question"]
    assert {q["question"] for q in w["questions"]} == {question}
    assert len({q["ecg_id"] for q in w["questions"]}) == 2  # one report per record: all first questions
    for res in report["backends"].values():
        assert res["latency_first_ms"]["n"] == 2 and res["latency_followup_ms"]["n"] == 0
    assert "2 reports on 2 held-out PTB-XL records" in proc.stdout


def test_scale_model_is_a_loadable_checkpoint_of_the_asked_size(tmp_path):
    pytest.importorskip("peft")
    import torch

    from diagecg.nn.llm_checkpoint import load_llm_checkpoint, read_llm_meta

    scale = _load_bench(REPO / "bench" / "scale_model.py", "bench_scale_model")
    like = build_tiny_instruct(tmp_path / "tiny")
    ckpt = scale.build(
        like,
        tmp_path / "scale",
        hidden=256,
        layers=3,
        intermediate=512,
        heads=4,
        max_new_tokens=3,
        lora_r=4,
        seed=0,
    )
    src = read_llm_meta(like)
    model, _, meta, paths = load_llm_checkpoint(ckpt, merge=False)
    c = model.get_base_model().config
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size) == (
        256,
        3,
        512,
        src.vocab.vocab_size,
    )
    assert meta.generation.max_new_tokens == 3 and meta.vocab == src.vocab and meta.prompt == src.prompt
    assert meta.train_folds == src.train_folds and meta.method == "lora"
    assert paths.ecg_tokenizer_dir.is_dir()
    x = torch.tensor([[src.vocab.bos_id, 5, 6, 7]])
    with torch.no_grad(), model.disable_adapter():
        plain = model(x).logits
    with torch.no_grad():
        assert not torch.allclose(model(x).logits, plain)  # the random adapter changes the function


def test_scale_model_refuses_a_missing_checkpoint_and_odd_widths(tmp_path, capsys):
    scale = _load_bench(REPO / "bench" / "scale_model.py", "bench_scale_model")
    assert scale.main(["--like", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "is not an LLM checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scale.main(["--like", str(tmp_path), "--out", str(tmp_path / "out"), "--hidden", "300"])
    assert "multiple of 32" in capsys.readouterr().err  # 300 is not; SmolLM2's 576 is
    assert not (tmp_path / "out").exists()


# --- bench/intervals.py ---------------------------------------------------------------------------------


def test_intervals_bench_auc_and_groups():
    from diagecg.datasets.ptbxl import PtbxlEntry
    from diagecg.types import PatientInfo

    ib = _load_bench(REPO / "bench" / "intervals.py", "bench_intervals")
    assert ib.auc([2.0, 3.0], [1.0]) == 1.0 and ib.auc([1.0], [1.0]) == 0.5 and ib.auc([], [1.0]) is None
    assert ib.auc([1.0, 3.0], [2.0]) == 0.5

    def entry(codes: dict[str, float], report: str = "") -> PtbxlEntry:
        return PtbxlEntry(
            ecg_id=1, patient_id=None, strat_fold=1, scp_codes=codes, report_de=report, patient=PatientInfo()
        )

    assert ib.in_group(entry({"SR": 0.0}), "SR") and not ib.in_group(entry({"SR": 0.0, "AFIB": 0.0}), "SR")
    assert ib.in_group(entry({"LAFB": 100.0}), "LAD")
    assert ib.in_group(entry({"SR": 0.0}, "sinus rhythm. left axis deviation."), "LAD")
    assert not ib.in_group(entry({"NORM": 100.0}, "sinusrhythmus linkstyp"), "LAD")  # -30..+30: not LAD


def test_intervals_bench_prints_every_check_on_a_few_records(shared_data, tmp_path, capsys):
    pytest.importorskip("neurokit2")
    pytest.importorskip("wfdb")
    ib = _load_bench(REPO / "bench" / "intervals.py", "bench_intervals")
    out = tmp_path / "intervals.json"
    args = ["--data", str(shared_data), "--max-records", "3", "--no-progress", "--out", str(out)]
    assert ib.main(args) == 0
    text = capsys.readouterr().out
    for line in (
        "(a) heart rate vs independent beat counts, 3 records at 500 Hz",
        "=== 100 Hz: 3 records",
        "=== 500 Hz: 3 records",
        "(c) qrs_ms: QRS >= 120 ms",
        "100 Hz vs 500 Hz, the same 3 recordings",
    ):
        assert line in text, text
    report = json.loads(out.read_text())
    for key in ("xqrs", "measure"):
        assert report["heart_rate"][key]["n_compared"] + report["heart_rate"][key]["missing"] == 3
    assert set(report["records"]) == {"100", "500"} and len(report["records"]["500"]) == 3
    assert report["rate_agreement"]["n"] == 3 and report["rates"]["100"]["ms_median"] > 0
    assert set(report["rates"]["500"]["checks"]) == {
        "b:rr_cv_percent",
        "b:rr_rmssd_ms",
        "c:qrs_ms",
        "d:qrs_axis_deg",
        "e:pr_ms",
        "f:qtc_bazett_ms",
    }


def test_serve_bench_runs_small_and_every_check_holds(tmp_path):
    """``bench/serve.py`` end to end at a small size (about 20 s): it starts and stops its own loopback
    servers, and fails (exit 1) when an answer differs, a bad input is mishandled or a 503 lacks
    Retry-After."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    out = tmp_path / "serve.json"
    args = ["--requests", "8", "--rss-requests", "250", "--disconnects", "2", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serve.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["checks"] and all(report["checks"].values()), report["checks"]
    assert {str(level["clients"]) for level in report["load"]} == {"1", "4", "16"}
    loads = {level["clients"]: level["answers_per_s"] for level in report["load"]}
    scaling = report["targets"]["answers_per_s_16_over_1"]
    assert scaling["value"] == pytest.approx(loads[16] / loads[1], abs=1e-3)
    assert scaling["pass"] == (loads[16] / loads[1] >= 2.0) and "answers/s at 16 clients" in proc.stdout


# --- bench/prefill.py ---------------------------------------------------------------------------------------


def test_prefill_bench_counts_the_model_work_and_times_the_shipped_model(tmp_path: Path) -> None:
    """The FLOP count from the GGUF's own shapes, and a short real run (never a timing value checked)."""
    prefill = _load_bench(REPO / "bench" / "prefill.py", "bench_prefill")
    gguf = REPO / "diagecg" / "bundles" / "default" / "llm-q8_0.gguf"
    shape = prefill.model_shape(gguf)
    manifest = json.loads((gguf.parent / "manifest.json").read_text())
    assert shape["n_vocab"] == manifest["vocab"]["vocab_size"]
    assert 0 < shape["n_params_nonembed"] < shape["n_params"]
    n = 10
    expected = (
        2 * shape["n_params_nonembed"] * n
        + 4 * shape["n_layer"] * n * n * shape["n_embd"]
        + 2 * shape["n_vocab"] * shape["n_embd"]
    )
    assert prefill.prefill_flops(shape, n) == pytest.approx(expected)
    out = tmp_path / "prefill.json"
    assert (
        prefill.main(
            [
                "--gguf",
                str(gguf),
                "--threads",
                "1",
                "--tokens",
                "16",
                "--repeats",
                "1",
                "--gemm-n",
                "64",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert [(r["flash_attn"], r["threads"]) for r in report["rows"]] == [(False, 1), (True, 1)]
    for r in report["rows"]:
        assert r["gflops"] == pytest.approx(r["gflop"] / (r["prefill_ms"] / 1e3))
        peak = report["peaks"]["1"]["fp32_gflops"]
        assert r["x_fp32_floor"] == pytest.approx((r["prefill_ms"] / 1e3) / (r["gflop"] / peak))
    assert prefill.main(["--quants", "q9_9", "--smollm2"]) == 2
