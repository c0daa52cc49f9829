"""Does a shipped bundle read the ECG? Per-finding verify metrics through the torch-free runtime.

What ``diagecg eval`` measures on the PyTorch checkpoint, measured here on the exported bundle
(ONNX ECG tokenizer + quantised GGUF), as a user gets it:

* PTB-XL (``--data``, held-out folds): every record is asked the verify question of each superclass,
  each statement with ``--min-positives`` positives and the tracked findings; AUC of
  ``1 - p(no)`` from the option probabilities, sensitivity / specificity / balanced accuracy of the
  most probable option; and the ECG ablation (each record asked with another record's ECG codes).
* The same records under other recording conditions (``--perturb gain1.5,noise50uv,wander``): a gain
  off by half, 50 uV of white noise, baseline wander.
* Records from other hospitals (``--challenge DIR``): PhysioNet/CinC Challenge 2020-2021 ``.hea`` +
  ``.mat`` with ``#Dx:`` SNOMED CT codes (or CPSC 2018's abbreviations); each record is asked about
  atrial fibrillation, complete right / left bundle branch block, first degree AV block, ventricular
  and atrial premature complexes, sinus bradycardia and tachycardia; balanced accuracy per finding.
* The **ruler** beside every table: for each finding with a defining measurement (``diagecg.criteria``:
  heart rate for sinus brady/tachycardia, PR for first degree AV block, QRS for bundle branch blocks,
  RR irregularity for AF, ...) the AUC of that one number of ``diagecg.features``, computed on the same
  records as read (at their own rate; a long record: the median over its windows). The model should
  never be worse than it.
* ``--fs 500``: the PTB-XL records of the held-out folds that exist at 500 Hz, read at 500 Hz (the
  runtime resamples them as it does any other hospital's recording).

    python bench/ecg_dependence.py --bundle diagecg/bundles/default --data ../shared/data \\
        --challenge path/to/challenge_records --out runs/ecg_dependence.json

Prints one table per source; ``--out`` writes the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diagecg.datasets import resolve_data_roots
from diagecg.datasets.ecgqa import QASample, finding_questions, load_answer_vocab
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.datasets.reports import load_scp_table
from diagecg.eval_results import format_findings, json_safe
from diagecg.io import read_record
from diagecg.preprocess import record_measurements
from diagecg.question_templates import fill_attributes, finding_template
from diagecg.runtime.pipeline import DiagEcgPipeline
from diagecg.scoring import NEGATIVE, ablation_permutation, format_calibration, ruler_scores, score_findings
from diagecg.training.eval_data import eval_record_subset, select_findings

# Challenge label -> PTB-XL finding (SNOMED CT codes of the 2020/2021 Challenges, CPSC 2018 abbreviations);
# the Challenges scored RBBB/CRBBB and PVC/VPB and PAC/SVPB as one class each
CHALLENGE_FINDINGS: dict[str, tuple[str, ...]] = {
    "AFIB": ("164889003", "AF"),
    "CRBBB": ("59118001", "713427006", "RBBB"),
    "CLBBB": ("164909002", "733534002", "LBBB"),
    "1AVB": ("270492004", "I-AVB", "IAVB"),
    "PVC": ("427172004", "17338001", "PVC"),
    "PAC": ("284470004", "63593006", "PAC"),
    "SBRAD": ("426177001",),
    "STACH": ("427084000",),
}
CHALLENGE_NAMES: dict[str, str] = {
    "AFIB": "atrial fibrillation",
    "CRBBB": "complete right bundle branch block",
    "CLBBB": "complete left bundle branch block",
    "1AVB": "first degree av block",
    "PVC": "ventricular premature complex",
    "PAC": "atrial premature complex",
    "SBRAD": "sinus bradycardia",
    "STACH": "sinus tachycardia",
}
OPTIONS = ("yes", "no", "not sure")


def _gain(x: np.ndarray, fs: float, rng: np.random.Generator) -> np.ndarray:
    return x * 1.5  # a device whose gain is off by half


def _noise(x: np.ndarray, fs: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, 0.05, x.shape)  # 50 uV of white noise


def _wander(x: np.ndarray, fs: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(x.shape[1]) / fs  # breathing and electrode drift: 0.5 mV at 0.3 Hz, 0.3 mV at 0.05 Hz
    return x + 0.5 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.3)) + 0.3 * np.sin(2 * np.pi * 0.05 * t)


# other recording conditions applied to the PTB-XL records (``--perturb``): (leads, n) mV -> same shape
PERTURBATIONS = {"gain1.5": _gain, "noise50uv": _noise, "wander": _wander}


def record_features(pipe: DiagEcgPipeline, record: Any) -> np.ndarray:
    """The measurements of a record as the runtime computes them (``preprocess.record_measurements``)."""
    return record_measurements(record, pipe.bundle.preprocess)


def _ruler(
    pipe: DiagEcgPipeline, records: dict[int, Any], samples: list[QASample], codes: list[str]
) -> dict[str, Any]:
    features = {i: record_features(pipe, r) for i, r in records.items()}
    return ruler_scores(
        [s.ecg_id for s in samples], codes, [s.answers != (NEGATIVE,) for s in samples], features
    )


def _score(
    pipe: DiagEcgPipeline,
    records: dict[int, Any],
    samples: list[QASample],
    source: dict[int, int] | None,
    progress: bool,
    desc: str,
) -> list[np.ndarray]:
    """Option probabilities of every sample, with the record's own ECG or (``source``) another's."""
    ecg = {i: pipe.ecg_codes(r) for i, r in records.items()} if source is not None else {}
    probs = []
    for s in tqdm(samples, desc=desc, disable=not progress, unit="q"):
        other = ecg[source[s.ecg_id]] if source is not None else None
        p = pipe.option_probabilities(records[s.ecg_id], s.question, OPTIONS, ecg_codes=other)
        probs.append(np.array([p[o] for o in OPTIONS]))
    return probs


def _via_catalogue(
    pipe: DiagEcgPipeline,
    records: dict[int, Any],
    samples: list[QASample],
    by_name: dict[str, str],
    labels: tuple[tuple[str, Any], ...],
    min_positives: int,
    progress: bool,
) -> dict[str, Any]:
    catalogue = pipe.bundle.questions
    assert catalogue is not None
    matched = [catalogue.match(s.question) for s in samples]

    def same(s: QASample, m: Any) -> bool:  # the question the sample asks (template 2 names no attribute)
        return m is not None and m.template_id == s.template_id and m.attributes in (s.attributes, ())

    asked = [
        dataclasses.replace(s, question=m.canonical)
        for s, m in zip(samples, matched, strict=True)
        if same(s, m)
    ]
    codes = [by_name[s.attributes[0]] for s in asked]
    missed = sorted({s.question for s, m in zip(samples, matched, strict=True) if not same(s, m)})
    block: dict[str, Any] = {
        "n_questions": len(samples),
        "n_matched": len(asked),
        "unmatched_examples": missed[:5],
    }
    for label, src in labels:
        probs = _score(pipe, records, asked, src, progress, f"paraphrase via catalogue {label}")
        block[label] = score_findings(asked, codes, probs, [OPTIONS] * len(asked), min_positives)
    return block


def ptbxl_findings(
    pipe: DiagEcgPipeline,
    data: Path,
    folds: tuple[int, ...],
    min_positives: int,
    wordings: tuple[str, ...],
    max_records: int | None,
    progress: bool,
    perturb: str | None = None,
    fs: int | None = None,
) -> dict[str, Any]:
    roots = resolve_data_roots(data)
    ptbxl_root, ecgqa_root = roots.ptbxl, roots.ecgqa
    ptbxl = PtbxlDataset.from_data_dir(data)
    scp = load_scp_table(ptbxl_root)
    fs = fs or (100 if pipe.bundle.preprocess.fs_hz <= 100 else 500)
    ids = eval_record_subset(ptbxl, ptbxl.ids(folds, fs_hz=fs), max_records, 0)  # the records eval draws
    records = {i: read_record(ptbxl.record_path(i, fs).with_suffix(".hea")) for i in ids}
    if perturb is not None:
        rng = np.random.default_rng(0)
        for r in records.values():
            r.signal = PERTURBATIONS[perturb](r.signal.astype(np.float64), r.fs_hz, rng).astype(np.float32)
    names = select_findings(ptbxl, ids, scp, load_answer_vocab(ecgqa_root), min_positives)
    by_name = {n: c for c, n in names.items()}
    source = ablation_permutation(ids, [ptbxl.entries[i].strat_fold for i in ids], seed=0)
    out: dict[str, Any] = {"findings": names, "n_records": len(ids), "perturbation": perturb, "fs_hz": fs}
    labels = (("model", None),) if perturb else (("model", None), ("ablated", source))
    catalogue = pipe.bundle.questions
    for wording in wordings:
        samples = finding_questions(ptbxl, ids, names, scp, 0, wording=wording)  # type: ignore[arg-type]
        if wording == "paraphrase" and catalogue is not None and not perturb:
            # what the product does with these wordings: each is matched to the catalogue and asked in
            # its canonical wording; the questions it cannot match (refused) are counted, not scored
            out["paraphrase_via_catalogue"] = _via_catalogue(
                pipe, records, samples, by_name, labels, min_positives, progress
            )
        codes = [by_name[s.attributes[0]] for s in samples]
        opts = [OPTIONS] * len(samples)
        if "ruler" not in out:
            out["ruler"] = _ruler(pipe, records, samples, codes)
        out[wording] = {
            label: score_findings(
                samples,
                codes,
                _score(pipe, records, samples, src, progress, f"{wording} {label}"),
                opts,
                min_positives,
            )
            for label, src in labels
        }
    return out


def challenge_labels(header: Path) -> set[str]:
    for line in header.read_text(errors="replace").splitlines():
        if line.lstrip("# ").lower().startswith("dx:"):
            return {t.strip() for t in line.split(":", 1)[1].split(",") if t.strip()}
    return set()


def challenge_findings(pipe: DiagEcgPipeline, folder: Path, progress: bool) -> dict[str, Any]:
    records, labels, failed = {}, {}, {}
    for k, header in enumerate(sorted(folder.glob("*.hea"))):
        try:
            records[k] = read_record(header)
        except Exception as e:  # a record the runtime refuses is counted, never silently dropped
            failed[header.name] = str(e)
            continue
        labels[k] = challenge_labels(header)
    samples, codes = [], []
    asks = finding_template()  # "Does this ECG show symptoms of X?"
    for k in records:
        for code, name in CHALLENGE_NAMES.items():
            present = bool(labels[k] & set(CHALLENGE_FINDINGS[code]))
            samples.append(
                QASample(
                    ecg_id=k,
                    question=fill_attributes(asks.text, (name,)),
                    answers=("yes" if present else "no",),
                    question_type=asks.question_type.value,
                    attribute_type="scp_code",
                    template_id=asks.template_id,
                    attributes=(name,),
                    source="generated",
                )
            )
            codes.append(code)
    source = ablation_permutation(list(records), [0] * len(records), seed=0)
    opts = [OPTIONS] * len(samples)
    out: dict[str, Any] = {
        "n_records": len(records),
        "failed": failed,
        "durations_s": sorted({round(r.duration_s, 1) for r in records.values()}),
    }
    out["ruler"] = _ruler(pipe, records, samples, codes)
    out["template"] = {
        label: score_findings(
            samples, codes, _score(pipe, records, samples, src, progress, f"challenge {label}"), opts, 1
        )
        for label, src in (("model", None), ("ablated", source))
    }
    if pipe.bundle.questions is not None:  # as the product answers: the whole record, window by window
        whole = []
        for s in tqdm(samples, desc="challenge whole record", disable=not progress, unit="q"):
            probs = pipe.answer(records[s.ecg_id], s.question).option_probabilities or {}
            whole.append(np.array([probs.get(o, 0.0) for o in OPTIONS]))
        out["whole_record"] = {"model": score_findings(samples, codes, whole, opts, 1), "ablated": None}
        out["whole_record_ruler"] = out["ruler"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--quant", default=None)
    ap.add_argument("--data", help="shared data root (PTB-XL + ECG-QA)")
    ap.add_argument("--folds", default="10")
    ap.add_argument("--min-positives", type=int, default=10)
    ap.add_argument("--wordings", default="template,paraphrase")
    ap.add_argument("--max-records", type=int, default=None)
    ap.add_argument("--challenge", help="folder of Challenge .hea/.mat records with #Dx labels")
    ap.add_argument(
        "--perturb",
        default="",
        help=f"comma-separated: {', '.join(PERTURBATIONS)} "
        "(PTB-XL records under other recording conditions; template wording, no ablation)",
    )
    ap.add_argument(
        "--fs",
        type=int,
        default=None,
        help="read the PTB-XL records at this rate (100 or 500; "
        "500 Hz exists for some records only); default: the bundle's",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.perturb and not a.data:
        ap.error("--perturb needs --data (it perturbs the PTB-XL records)")
    t0 = time.time()
    results: dict[str, Any] = {"bundle": a.bundle}
    with DiagEcgPipeline.from_bundle(a.bundle, quant=a.quant, device="cpu", threads=a.threads) as pipe:
        results["quant"] = pipe.quant
        if a.data:
            results["ptbxl"] = ptbxl_findings(
                pipe,
                Path(a.data),
                tuple(int(f) for f in a.folds.split(",")),
                a.min_positives,
                tuple(a.wordings.split(",")),
                a.max_records,
                not a.no_progress,
                fs=a.fs,
            )
            r = results["ptbxl"]
            print(f"PTB-XL folds {a.folds}, {r['n_records']} records at {r['fs_hz']} Hz")
            print("\n".join(format_findings(results["ptbxl"])))
            for wording in a.wordings.split(","):
                cal = results["ptbxl"][wording]["model"]["calibration"]
                for key, what in (("presence", "p(present)"), ("answer", "the yes/no call's confidence")):
                    print("\n" + "\n".join(format_calibration(cal[key], f"reliability of {what}, {wording}")))
            via = results["ptbxl"].get("paraphrase_via_catalogue")
            if via:
                print(
                    f"paraphrase via catalogue: {via['n_matched']} of {via['n_questions']} questions "
                    f"matched the catalogue's template (unmatched e.g. {via['unmatched_examples'][:2]})"
                )
        for name in filter(None, a.perturb.split(",")):
            if name not in PERTURBATIONS:
                ap.error(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
            results[f"ptbxl_{name}"] = r = ptbxl_findings(
                pipe,
                Path(a.data),
                tuple(int(f) for f in a.folds.split(",")),
                a.min_positives,
                ("template",),
                a.max_records,
                not a.no_progress,
                perturb=name,
            )
            print(f"\nPTB-XL folds {a.folds}, recorded as {name}")
            print("\n".join(format_findings(r)))
        if a.challenge:
            results["challenge"] = ch = challenge_findings(pipe, Path(a.challenge), not a.no_progress)
            print(f"\nChallenge records {a.challenge}: {ch['n_records']} read, {len(ch['failed'])} refused")
            print("\n".join(format_findings({"template": ch["template"], "ruler": ch["ruler"]})))
            if "whole_record" in ch:
                print(f"\nthe whole record, window by window (durations {ch['durations_s']} s):")
                print("\n".join(format_findings({"whole record": ch["whole_record"], "ruler": ch["ruler"]})))
    results["wall_s"] = round(time.time() - t0, 1)
    if a.out:
        text = json.dumps(json_safe(results), indent=2, sort_keys=True, allow_nan=False)
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
