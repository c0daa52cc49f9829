"""Stage 1 on real PTB-XL records: a short run learns, uses the codebook, checkpoints, resumes, encodes;
with the summary head (the default) it also learns the findings and resumes bit for bit."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diagecg.config import PRESETS, EncoderConfig, FSQConfig, PreprocessConfig, SummaryConfig, apply_overrides
from diagecg.constants import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    RUN_SUMMARY,
    ManifestKey,
)
from diagecg.datasets import resolve_data_roots, seeded_subset
from diagecg.datasets.ptbxl import SUPERCLASSES, PtbxlDataset, finding_labels
from diagecg.errors import CheckpointError
from diagecg.features import FEATURE_NAMES, MEASURE_TOKEN_EDGES
from diagecg.nn.checkpoint import (
    load_optimizer_state,
    load_tokenizer,
    read_configs,
    read_trainer_state,
    save_checkpoint,
)
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.training.ecg_data import load_signals
from diagecg.training.encode_records import encode_ptbxl, encode_signals, load_token_cache
from diagecg.training.train_tokenizer import (
    TokenizerTrainConfig,
    augment_mv,
    evaluate,
    main,
    summary_auc,
)

STEPS = 20
# Measured after this 20-step run of the paper's tokenizer (summary=False, augment=False) on 16 eval records
# (1008 frames), seeds 0/1/2: 147/100/163 codes used (11.3/7.7/12.6%), perplexity 32/44/80, eval MSE
# 0.95/0.98/0.90 from 1.54/1.24/1.28 untrained. The floors leave about 2x margin.
USAGE_FLOOR = 0.04  # >= 52 of 1296 codes
PERPLEXITY_FLOOR = 12.0
# The default tokenizer (summary head, augmentation) after the same 20 steps, seeds 0/1/2: summary AUC of the
# superclasses 0.84/0.80/0.82 on the 16 eval records (0.5 is chance), eval MSE 1.00/1.00/0.98: the findings'
# cross-entropy slows the reconstruction of such a short run. The floor leaves about 2x margin over chance.
SUMMARY_STEPS = STEPS
SUMMARY_AUC_FLOOR = 0.65
TINY = EncoderConfig(
    n_samples=1000, stem_channels=8, stage_channels=(8, 8, 16, 16), groups=4, fused_channels=32
)


def tiny_config(data: Path, out: Path, **changes: object) -> TokenizerTrainConfig:
    base = TokenizerTrainConfig(
        data_dir=str(data),
        out_dir=str(out),
        max_train_records=48,
        max_eval_records=16,
        steps=STEPS,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        eval_every=10,
        log_every=5,
        num_threads=1,
        progress=False,
        encoder=TINY,
        ptbxl_full=False,  # ptbxl/ alone (tests/datasets/test_ptbxl_full.py: ptbxl_full)
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def runs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The paper's tokenizer (no summary, no augmentation) run straight through; and the default
    tokenizer (summary head, augmentation) run straight through and interrupted at step 10 then resumed
    with other summary settings, which the checkpoint's must override."""
    root = tmp_path_factory.mktemp("tokenizer")
    plain = main(tiny_config(shared_data, root / "plain", summary=False, augment=False))
    short = dict(steps=SUMMARY_STEPS, eval_every=SUMMARY_STEPS // 2)
    full = main(tiny_config(shared_data, root / "full", **short))
    main(tiny_config(shared_data, root / "resumed", stop_at_step=SUMMARY_STEPS // 2, **short))  # "killed"
    first_half = read_trainer_state(root / "resumed")
    resumed = main(
        tiny_config(shared_data, root / "resumed", resume=True, summary=False, summary_levels=4, **short)
    )
    return {"root": root, "plain": plain, "full": full, "resumed": resumed, "first_half_state": first_half}


def test_training_lowers_reconstruction_loss(runs: dict) -> None:
    s = runs["plain"]
    assert s["step"] == STEPS and s["n_train_records"] == 48 and s["n_eval_records"] == 16
    assert s["eval_zero_mse"] == pytest.approx(1.0, abs=0.01)  # z-scored input
    assert s["eval"]["mse"] < 0.9 * s["eval_initial_mse"]
    assert s["eval"]["mse"] < s["eval_zero_mse"]  # better than predicting the baseline (all zeros)
    assert s["train_loss_last"] < 0.9 * s["train_loss_first"]
    assert [h["step"] for h in s["history"]] == [0, 10, 20]


def test_codebook_usage_after_short_run(runs: dict) -> None:
    ev = runs["plain"]["eval"]
    assert ev["code_usage"] >= USAGE_FLOOR, ev
    assert ev["codes_used"] == round(ev["code_usage"] * 1296)
    assert PERPLEXITY_FLOOR <= ev["perplexity"] <= ev["codes_used"]


def test_run_writes_checkpoint_and_summary(runs: dict) -> None:
    out = runs["root"] / "plain"
    for name in (CHECKPOINT_WEIGHTS, CHECKPOINT_CONFIG, CHECKPOINT_STATE, CHECKPOINT_OPTIMIZER, RUN_SUMMARY):
        assert (out / name).is_file(), name
    assert read_trainer_state(out)["step"] == STEPS


def test_summary_off_is_the_frame_only_tokenizer(runs: dict) -> None:
    assert ManifestKey.SUMMARY not in read_configs(runs["root"] / "plain")
    tok, *_ = load_tokenizer(runs["root"] / "plain")
    assert tok.summary is None and tok.n_tokens == 63
    s = runs["plain"]
    assert s["n_summary_tokens"] == 0 and s["summary_findings"] == []
    assert not any(k.startswith("summary_auc") for k in s["eval"])


def test_summary_checkpoint_stores_the_findings_superclasses_first(runs: dict, ptbxl_root: Path) -> None:
    stored = SummaryConfig.from_dict(read_configs(runs["root"] / "full")[ManifestKey.SUMMARY])
    cfg = tiny_config(ptbxl_root, runs["root"] / "unused")
    assert stored.findings[: len(SUPERCLASSES)] == SUPERCLASSES and len(stored.findings) > len(SUPERCLASSES)
    assert stored.features == FEATURE_NAMES
    assert (stored.levels, stored.hidden) == (cfg.summary_levels, cfg.summary_hidden)
    # every statement token has enough positives among the run's own training records
    ptbxl = PtbxlDataset(ptbxl_root)
    train_ids = seeded_subset(ptbxl.ids(cfg.train_folds), cfg.max_train_records, cfg.seed)
    counts = np.array(finding_labels(ptbxl, train_ids, stored.findings)).sum(axis=0)
    assert (counts[len(SUPERCLASSES) :] >= cfg.summary_min_positives).all()
    s = runs["full"]
    # one token per finding, then one per binned measurement (diagecg.features.MEASURE_TOKEN_EDGES)
    assert stored.measure_tokens == tuple(MEASURE_TOKEN_EDGES) and cfg.measure_tokens
    assert stored.measure_edges == tuple(MEASURE_TOKEN_EDGES[k] for k in stored.measure_tokens)
    assert s["n_summary_tokens"] == len(stored.findings) + len(MEASURE_TOKEN_EDGES)
    assert s["summary_findings"] == list(stored.findings)


def test_summary_run_reports_auc_and_still_learns_reconstruction(runs: dict) -> None:
    s = runs["full"]
    ev = s["eval"]
    assert set(ev["summary_auc"]) == set(s["summary_findings"])
    assert all(v is None or 0.0 <= v <= 1.0 for v in ev["summary_auc"].values())
    assert ev["summary_auc_superclass"] >= SUMMARY_AUC_FLOOR, ev["summary_auc"]
    assert not math.isnan(ev["summary_auc_macro"])
    assert all("eval_summary_auc_macro" in h for h in s["history"])
    assert ev["mse"] < 0.9 * s["eval_initial_mse"]


def test_resume_continues_step_count(runs: dict) -> None:
    half = SUMMARY_STEPS // 2
    assert runs["first_half_state"]["step"] == half
    s = runs["resumed"]
    assert s["step"] == SUMMARY_STEPS and s["steps_this_run"] == half and s["resumed_from_step"] == half
    assert [h["step"] for h in s["history"]] == [0, half, SUMMARY_STEPS]  # carried over from the checkpoint


def test_resume_keeps_the_checkpoint_summary(runs: dict) -> None:
    full = read_configs(runs["root"] / "full")[ManifestKey.SUMMARY]
    assert read_configs(runs["root"] / "resumed")[ManifestKey.SUMMARY] == full  # not summary=False, levels=4
    assert runs["resumed"]["summary_findings"] == runs["full"]["summary_findings"]


def test_resumed_run_matches_uninterrupted_run(runs: dict) -> None:
    a, *_ = load_tokenizer(runs["root"] / "full")
    b, *_ = load_tokenizer(runs["root"] / "resumed")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and any(k.startswith("summary.") for k in sa)
    for k in sa:  # same batches, augmentation, dropout, schedule and optimiser state: bit-identical
        assert torch.equal(sa[k], sb[k]), k
    assert runs["resumed"]["eval"] == runs["full"]["eval"]


def test_a_finished_run_resumed_reports_without_reading_the_training_records(
    runs: dict, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped at stop_at_step and started again (reproduce_demo.sh's --resume) trains nothing:
    it reads the held-out records and a batch of training records, not all of them, and reports the
    same model and the same counts."""
    import shutil

    import diagecg.training.train_tokenizer as tt

    out = tmp_path / "done"
    shutil.copytree(runs["root"] / "full", out)
    read: list[int] = []
    real = tt.load_signals

    def counting(ptbxl, ids, *a, **k):  # type: ignore[no-untyped-def]
        read.append(len(ids))
        return real(ptbxl, ids, *a, **k)

    monkeypatch.setattr(tt, "load_signals", counting)
    s = main(tiny_config(shared_data, out, resume=True, steps=SUMMARY_STEPS, eval_every=SUMMARY_STEPS // 2))
    assert s["steps_this_run"] == 0 and s["step"] == SUMMARY_STEPS
    assert read == [8, 16]  # one batch of training records, the held-out records
    assert s["n_train_records"] == runs["full"]["n_train_records"] and s["eval"] == runs["full"]["eval"]


def _eval_set(ptbxl_root: Path, runs: dict, pre: PreprocessConfig):
    ptbxl = PtbxlDataset(ptbxl_root)
    cfg = tiny_config(ptbxl_root, runs["root"] / "unused")
    # the run's own subset
    eval_ids = seeded_subset(ptbxl.ids(cfg.eval_folds), cfg.max_eval_records, cfg.seed)
    return ptbxl, load_signals(ptbxl, eval_ids, pre, progress=False)


def test_loaded_checkpoint_reproduces_eval(runs: dict, ptbxl_root: Path) -> None:
    tok, pre, enc, fsq = load_tokenizer(runs["root"] / "plain")
    assert (pre.fs_hz, enc.n_samples, enc.stage_channels) == (100, 1000, (8, 8, 16, 16))
    assert fsq.levels == (6, 6, 6, 6)
    _, loaded = _eval_set(ptbxl_root, runs, pre)
    ev = evaluate(tok, torch.from_numpy(loaded.signals), batch_size=8, device=torch.device("cpu"))
    assert ev["mse"] == pytest.approx(runs["plain"]["eval"]["mse"], rel=1e-5)
    assert ev["codes_used"] == runs["plain"]["eval"]["codes_used"]


def test_loaded_summary_checkpoint_reproduces_the_auc(runs: dict, ptbxl_root: Path) -> None:
    tok, pre, _, _ = load_tokenizer(runs["root"] / "full")
    ptbxl, loaded = _eval_set(ptbxl_root, runs, pre)
    labels = np.array(finding_labels(ptbxl, loaded.ids, tok.summary_cfg.findings), dtype=np.float32)
    ev = evaluate(
        tok,
        torch.from_numpy(loaded.signals),
        8,
        torch.device("cpu"),
        torch.from_numpy(loaded.features),
        labels,
    )
    want = runs["full"]["eval"]
    assert ev["summary_auc"] == want["summary_auc"]
    assert ev["mse"] == pytest.approx(want["mse"], rel=1e-5)


def test_refuses_to_overwrite_checkpoint_without_resume(runs: dict, shared_data: Path) -> None:
    with pytest.raises(ValueError, match="--resume"):
        main(tiny_config(shared_data, runs["root"] / "plain"))


def test_encode_ptbxl_writes_token_cache(runs: dict, shared_data: Path, tmp_path: Path) -> None:
    ckpt = runs["root"] / "plain"
    cache = tmp_path / "tokens.npz"
    tokens = encode_ptbxl(
        ckpt, shared_data, out_path=cache, batch_size=32, folds=(9,), progress=False, full=False
    )
    ptbxl = PtbxlDataset(resolve_data_roots(shared_data).ptbxl)
    assert sorted(tokens) == ptbxl.ids((9,))
    assert all(v.shape == (63,) and v.dtype == np.int64 for v in tokens.values())
    assert all(0 <= v.min() and v.max() < 1296 for v in tokens.values())
    loaded = load_token_cache(cache)
    assert loaded.keys() == tokens.keys() and all(np.array_equal(loaded[k], tokens[k]) for k in tokens)
    tok, pre, _, _ = load_tokenizer(ckpt)
    ids = sorted(tokens)[:5]
    x = load_signals(ptbxl, ids, pre, progress=False).signals
    assert np.array_equal(encode_signals(tok, x, batch_size=2), np.stack([tokens[i] for i in ids]))


def test_encode_ptbxl_with_summary_puts_summary_codes_first(
    runs: dict, shared_data: Path, tmp_path: Path
) -> None:
    ckpt = runs["root"] / "full"
    tok, pre, _, _ = load_tokenizer(ckpt)
    n_sum = tok.n_summary
    tokens = encode_ptbxl(
        ckpt, shared_data, out_path=tmp_path / "t.npz", batch_size=32, folds=(9,), progress=False, full=False
    )
    rows = np.stack(list(tokens.values()))
    assert rows.shape[1] == n_sum + 63
    n_find, levels = len(tok.summary_cfg.findings), tok.summary_cfg.levels
    blocks = 1296 + np.arange(n_find) * levels  # finding k: [1296 + k L, 1296 + (k+1) L)
    assert ((rows[:, :n_find] >= blocks) & (rows[:, :n_find] < blocks + levels)).all()
    # then measurement m: [base_m, base_m + bins_m), after all finding codes
    sizes = np.array([len(e) + 1 for e in tok.summary_cfg.measure_edges])
    starts = 1296 + n_find * levels + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    assert ((rows[:, n_find:n_sum] >= starts) & (rows[:, n_find:n_sum] < starts + sizes)).all()
    assert rows[:, n_sum:].max() < 1296
    ptbxl = PtbxlDataset(resolve_data_roots(shared_data).ptbxl)
    ids = sorted(tokens)[:4]
    loaded = load_signals(ptbxl, ids, pre, progress=False)
    want = np.stack([tokens[i] for i in ids])
    assert np.array_equal(encode_signals(tok, loaded.signals, loaded.features, batch_size=3), want)
    with pytest.raises(ValueError, match="measurements"):
        encode_signals(tok, loaded.signals)


# --- unit tests without a training run ---------------------------------------------------------------


def _tiny_tokenizer(seed: int = 0) -> EcgTokenizer:
    torch.manual_seed(seed)
    return EcgTokenizer(TINY, FSQConfig())


def _configs(tok: EcgTokenizer) -> dict:
    return {
        ManifestKey.PREPROCESS: PreprocessConfig(fs_hz=100),
        ManifestKey.ENCODER: tok.encoder_cfg,
        ManifestKey.FSQ: tok.fsq_cfg,
    }


def test_checkpoint_roundtrip_gives_identical_indices(tmp_path: Path) -> None:
    tok = _tiny_tokenizer()
    opt = torch.optim.AdamW(tok.parameters(), lr=1e-3)
    x = torch.randn(4, 12, 1000, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # non-trivial weights and optimiser state
        opt.zero_grad()
        torch.nn.functional.mse_loss(tok(x)[0], x).backward()
        opt.step()
    save_checkpoint(tmp_path, tok, _configs(tok), step=2, optimizer=opt, extra={"note": "x"})
    loaded, pre, enc, fsq = load_tokenizer(tmp_path)
    assert (pre, enc, fsq) == (PreprocessConfig(fs_hz=100), tok.encoder_cfg, tok.fsq_cfg)
    assert torch.equal(loaded.encode(x), tok.encode(x))
    assert torch.equal(loaded.decode_indices(tok.encode(x)), tok.decode_indices(tok.encode(x)))
    assert read_trainer_state(tmp_path)["extra"] == {"note": "x"}

    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    load_optimizer_state(tmp_path, opt2)
    want, got = opt.state_dict(), opt2.state_dict()
    assert want["param_groups"] == got["param_groups"]
    assert want["state"].keys() == got["state"].keys()
    for pid, st in want["state"].items():
        assert st.keys() == got["state"][pid].keys()
        assert all(torch.equal(st[k], got["state"][pid][k]) for k in st)


def test_checkpoint_with_mismatched_config_is_refused(tmp_path: Path) -> None:
    tok = _tiny_tokenizer()
    cfgs = _configs(tok)
    cfgs[ManifestKey.ENCODER] = dataclasses.replace(tok.encoder_cfg, fused_channels=64)
    save_checkpoint(tmp_path, tok, cfgs, step=0)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_tokenizer(tmp_path)
    with pytest.raises(CheckpointError, match="no optimiser state"):
        load_optimizer_state(tmp_path, torch.optim.AdamW(tok.parameters()))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(tmp_path / "missing")


def test_load_signals_skips_and_counts_invalid_records(
    ptbxl_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = PtbxlDataset(ptbxl_root)
    ids = src.ids((9,))[:3]
    root = tmp_path / "ptbxl"
    root.mkdir()
    shutil.copy(ptbxl_root / "ptbxl_labels.csv", root)
    for i in ids:
        dst = src.record_path(i).relative_to(ptbxl_root)
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".hea", ".dat"):
            shutil.copy(src.record_path(i).with_suffix(suffix), (root / dst).with_suffix(suffix))
    bad = PtbxlDataset(root).record_path(ids[1]).with_suffix(".dat")
    bad.write_bytes(bad.read_bytes()[:100])  # truncated signal file
    with caplog.at_level(logging.WARNING):
        loaded = load_signals(PtbxlDataset(root), ids, PreprocessConfig(fs_hz=100), progress=False)
    assert loaded.ids == [ids[0], ids[2]] and list(loaded.skipped) == [ids[1]]
    assert loaded.signals.shape == (2, 12, 1000) and loaded.features.shape == (2, len(FEATURE_NAMES))
    assert np.isfinite(loaded.features).all() and loaded.prepared_mv is None  # keep_mv=False
    assert "skipped 1 of 3" in caplog.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"eval_folds": (10,)}, "eval_folds"),
        ({"train_folds": (1, 2, 10)}, "train_folds"),
        ({"eval_folds": (8,)}, "eval_folds"),
        ({"preset": "250hz"}, "preset"),
        ({"steps": 0}, "steps"),
        ({"summary_levels": 1}, "summary_levels"),
        ({"summary_min_positives": 0}, "summary_min_positives"),
        ({"summary_weight": -0.5}, "summary_weight"),
        ({"summary_hidden": 0}, "summary_hidden"),
    ],
)
def test_config_rejects_bad_values(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TokenizerTrainConfig(**change)


def test_config_overrides_reach_the_architecture() -> None:
    cfg = apply_overrides(
        TokenizerTrainConfig(),
        ["preset=500hz", "encoder.stage_channels=16,16,32,32", "encoder.groups=8", "fsq.levels=8,5,5,5"],
    )
    pre, enc, fsq = cfg.model_configs()
    assert pre.fs_hz == 500 and enc.n_frames == 313 and enc.stage_channels == (16, 16, 32, 32)
    assert enc.stem_channels == PRESETS["500hz"][1].stem_channels  # the rest is the preset's
    assert fsq.codebook_size == 1000
    assert TokenizerTrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="groups"):
        apply_overrides(TokenizerTrainConfig(), ["encoder.stem_channels=12", "encoder.groups=8"])
    with pytest.raises(ValueError, match="n_samples"):  # the preset's preprocessing gives 1000 samples
        apply_overrides(TokenizerTrainConfig(), ["encoder.n_samples=5000"])
    with pytest.raises(ValueError, match="unknown key 'encoder.stem' .*stem_channels"):
        apply_overrides(TokenizerTrainConfig(), ["encoder.stem=8"])
    assert apply_overrides(cfg, ["encoder=none"]).model_configs()[1] == PRESETS["500hz"][1]


def test_config_reads_a_partial_encoder_and_the_old_flat_keys() -> None:
    partial = TokenizerTrainConfig.from_dict(
        {"encoder": {"stem_channels": 8, "stage_channels": [8, 8, 8, 8], "groups": 4}}
    )
    assert partial.model_configs()[1] == dataclasses.replace(
        PRESETS["100hz"][1], stem_channels=8, stage_channels=(8, 8, 8, 8), groups=4
    )
    flat = TokenizerTrainConfig.from_dict(
        {
            "stem_channels": 8,
            "stage_channels": [8, 8, 8, 8],
            "groups": 4,
            "fused_channels": None,
            "fsq_levels": [5, 5, 5],
        }
    )
    assert flat.encoder == partial.encoder and flat.fsq == FSQConfig(levels=(5, 5, 5))
    unset = TokenizerTrainConfig.from_dict({"stem_channels": None, "fsq_levels": None})
    assert unset.encoder is None and unset.fsq is None


def test_encode_signals_features_are_required_by_a_summary_only() -> None:
    tok = _tiny_tokenizer()
    summary = SummaryConfig(findings=("NORM", "MI"), levels=4, features=FEATURE_NAMES, hidden=8)
    torch.manual_seed(0)
    with_summary = EcgTokenizer(tok.encoder_cfg, tok.fsq_cfg, summary).eval()
    x = np.random.default_rng(0).normal(size=(3, 12, 1000)).astype(np.float32)
    f = np.random.default_rng(1).normal(size=(3, len(FEATURE_NAMES))).astype(np.float32)
    plain = encode_signals(tok, x, batch_size=2)
    assert np.array_equal(encode_signals(tok, x, f, batch_size=2), plain)  # ignored without a summary
    rows = encode_signals(with_summary, x, f, batch_size=2)
    assert rows.shape == (3, 2 + 63) and rows.dtype == np.int64
    assert np.array_equal(rows, with_summary.encode(torch.from_numpy(x), torch.from_numpy(f)).numpy())
    with pytest.raises(ValueError, match="measurements"):
        encode_signals(with_summary, x)
    empty = encode_signals(with_summary, x[:0], f[:0])
    assert empty.shape == (0, 65) and empty.dtype == np.int64


# --- augmentation and the summary AUC -------------------------------------------------------------------


def test_augment_mv_is_seeded_and_keeps_shape() -> None:
    x = np.random.default_rng(0).normal(size=(4, 12, 1000)).astype(np.float32)
    a = augment_mv(x, np.random.default_rng([0, 7]))
    b = augment_mv(x, np.random.default_rng([0, 7]))
    c = augment_mv(x, np.random.default_rng([0, 8]))
    assert a.shape == x.shape and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, x)


def test_augment_mv_changes_gain_within_the_documented_range() -> None:
    ones = np.ones((200, 12, 2000), dtype=np.float32)  # 1 mV everywhere: the mean of a lead is its gain
    gain = augment_mv(ones, np.random.default_rng(1), devices=False).mean(axis=-1)  # (B, leads)
    assert gain.min() >= 0.75 * 0.9 - 0.01 and gain.max() <= 4 / 3 * 1.1 + 0.01
    assert gain.min() < 0.75 and gain.max() > 1.33  # the record gain spans its range
    assert (gain.std(axis=1) > 0.01).all()  # and each lead gets its own gain on top
    noise = augment_mv(
        np.zeros((200, 12, 2000), dtype=np.float32), np.random.default_rng(2), devices=False
    ).std(axis=(1, 2))
    assert noise.max() <= 0.041 and noise.min() < 0.005  # white noise of up to 0.04 mV per record


def test_augment_mv_adds_other_devices_conditions_to_some_records() -> None:
    fs, n = 100.0, 1000
    square = np.where((np.arange(n) // 10) % 2 == 0, 1.0, -1.0).astype(np.float32)  # 5 Hz, sharp edges
    x = np.broadcast_to(square, (300, 12, n)).copy()
    y = augment_mv(x, np.random.default_rng(3), fs)
    plain = augment_mv(x, np.random.default_rng(3), fs, devices=False)

    # narrower bandwidth (half the records): less slope energy per amplitude; wander (a third) or an
    # electrode burst (a fifth): some 1 s mean (0 for the square) moves: about 1 - 2/3 * 4/5 of the records
    def sharpness(v: np.ndarray) -> np.ndarray:
        return (np.diff(v, axis=-1) ** 2).mean(axis=(1, 2)) / (v**2).mean(axis=(1, 2))

    smoothed = sharpness(y) < 0.8 * sharpness(plain)
    drift = np.abs(y.reshape(300, 12, 10, 100).mean(axis=-1)).max(axis=(1, 2)) > 0.01
    assert 0.35 < smoothed.mean() < 0.65 and 0.35 < drift.mean() < 0.65
    assert y.dtype == np.float32 and y.shape == x.shape


def test_summary_auc_reports_each_finding_and_superclass_mean() -> None:
    labels = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 1, 0]], dtype=np.float32)
    logits = np.array([[2, 0, 0, 1], [1, 1, 0, 0], [3, 2, 0, 2], [0, -1, 0, 3]], dtype=np.float32)
    out = summary_auc(logits, labels, ("NORM", "MI", "AFIB", "SR"))
    assert out["summary_auc"] == {"NORM": 1.0, "MI": 1.0, "AFIB": None, "SR": 0.5}  # AFIB: one class only
    assert out["summary_auc_superclass"] == 1.0  # NORM and MI; AFIB and SR are statements
    assert out["summary_auc_macro"] == pytest.approx(2.5 / 3)
    none = summary_auc(logits[:, 2:], labels[:, 2:], ("AFIB", "SR"))
    assert math.isnan(none["summary_auc_superclass"])
