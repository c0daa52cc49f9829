"""Stage 1 on real PTB-XL records: a short run learns, uses the codebook, checkpoints, resumes, encodes."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diagecg.config import EncoderConfig, FSQConfig, PreprocessConfig
from diagecg.constants import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    RUN_SUMMARY,
    ManifestKey,
)
from diagecg.errors import CheckpointError
from diagecg.nn.checkpoint import load_optimizer_state, load_tokenizer, read_trainer_state, save_checkpoint
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.training.ecg_data import load_signals, resolve_ptbxl_root
from diagecg.training.encode_records import encode_ptbxl, encode_signals, load_token_cache
from diagecg.training.ptbxl import PtbxlDataset
from diagecg.training.train_tokenizer import TokenizerTrainConfig, evaluate, main, subset_ids

STEPS = 20
# Measured after this 20-step run on 16 eval records (1008 frames), seeds 0/1/2: 147/100/163 codes used
# (11.3/7.7/12.6%), perplexity 32/44/80, eval MSE 0.95/0.98/0.90 from 1.54/1.24/1.28 untrained.
# The floors leave about 2x margin.
USAGE_FLOOR = 0.04  # >= 52 of 1296 codes
PERPLEXITY_FLOOR = 12.0
TINY = dict(stem_channels=8, stage_channels=(8, 8, 16, 16), groups=4, fused_channels=32)


def tiny_config(data: Path, out: Path, **changes: object) -> TokenizerTrainConfig:
    base = TokenizerTrainConfig(
        data_dir=str(data), out_dir=str(out), max_train_records=48, max_eval_records=16, steps=STEPS,
        batch_size=8, lr=3e-3, warmup_steps=2, eval_every=10, log_every=5, num_threads=1, progress=False,
        **TINY,
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def runs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One uninterrupted run, and one interrupted at step 10 and resumed to the same step."""
    root = tmp_path_factory.mktemp("tokenizer")
    full = main(tiny_config(shared_data, root / "full"))
    main(tiny_config(shared_data, root / "resumed", stop_at_step=10))  # "killed" at step 10
    first_half_state = read_trainer_state(root / "resumed")
    resumed = main(tiny_config(shared_data, root / "resumed", resume=True))
    return {"root": root, "full": full, "resumed": resumed, "first_half_state": first_half_state}


def test_training_lowers_reconstruction_loss(runs: dict) -> None:
    s = runs["full"]
    assert s["step"] == STEPS and s["n_train_records"] == 48 and s["n_eval_records"] == 16
    assert s["eval_zero_mse"] == pytest.approx(1.0, abs=0.01)  # z-scored input
    assert s["eval"]["mse"] < 0.9 * s["eval_initial_mse"]
    assert s["eval"]["mse"] < s["eval_zero_mse"]  # better than predicting the baseline (all zeros)
    assert s["train_loss_last"] < 0.9 * s["train_loss_first"]
    assert [h["step"] for h in s["history"]] == [0, 10, 20]


def test_codebook_usage_after_short_run(runs: dict) -> None:
    ev = runs["full"]["eval"]
    assert ev["code_usage"] >= USAGE_FLOOR, ev
    assert ev["codes_used"] == round(ev["code_usage"] * 1296)
    assert PERPLEXITY_FLOOR <= ev["perplexity"] <= ev["codes_used"]


def test_run_writes_checkpoint_and_summary(runs: dict) -> None:
    out = runs["root"] / "full"
    for name in (CHECKPOINT_WEIGHTS, CHECKPOINT_CONFIG, CHECKPOINT_STATE, CHECKPOINT_OPTIMIZER, RUN_SUMMARY):
        assert (out / name).is_file(), name
    assert read_trainer_state(out)["step"] == STEPS


def test_resume_continues_step_count(runs: dict) -> None:
    assert runs["first_half_state"]["step"] == 10
    s = runs["resumed"]
    assert s["step"] == STEPS and s["steps_this_run"] == STEPS - 10 and s["resumed_from_step"] == 10
    assert [h["step"] for h in s["history"]] == [0, 10, 20]  # history carried over from the checkpoint


def test_resumed_run_matches_uninterrupted_run(runs: dict) -> None:
    a, *_ = load_tokenizer(runs["root"] / "full")
    b, *_ = load_tokenizer(runs["root"] / "resumed")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:  # same batches, schedule and optimiser state: bit-identical on one machine
        assert torch.equal(sa[k], sb[k]), k
    assert runs["resumed"]["eval"] == runs["full"]["eval"]


def test_loaded_checkpoint_reproduces_eval(runs: dict, ptbxl_root: Path) -> None:
    tok, pre, enc, fsq = load_tokenizer(runs["root"] / "full")
    assert (pre.fs_hz, enc.n_samples, enc.stage_channels) == (100, 1000, (8, 8, 16, 16))
    assert fsq.levels == (6, 6, 6, 6)
    ptbxl = PtbxlDataset(ptbxl_root)
    cfg = tiny_config(ptbxl_root, runs["root"] / "unused")
    eval_ids = subset_ids(ptbxl.ids(cfg.eval_folds), cfg.max_eval_records, cfg.seed)  # the run's own subset
    _, x, _ = load_signals(ptbxl, eval_ids, pre, progress=False)
    ev = evaluate(tok, torch.from_numpy(x), batch_size=8, device=torch.device("cpu"))
    assert ev["mse"] == pytest.approx(runs["full"]["eval"]["mse"], rel=1e-5)
    assert ev["codes_used"] == runs["full"]["eval"]["codes_used"]


def test_refuses_to_overwrite_checkpoint_without_resume(runs: dict, shared_data: Path) -> None:
    with pytest.raises(ValueError, match="--resume"):
        main(tiny_config(shared_data, runs["root"] / "full"))


def test_encode_ptbxl_writes_token_cache(runs: dict, shared_data: Path, tmp_path: Path) -> None:
    ckpt = runs["root"] / "full"
    cache = tmp_path / "tokens.npz"
    tokens = encode_ptbxl(ckpt, shared_data, out_path=cache, batch_size=32, folds=(9,), progress=False)
    ptbxl = PtbxlDataset(resolve_ptbxl_root(shared_data))
    assert sorted(tokens) == ptbxl.ids((9,))
    assert all(v.shape == (63,) and v.dtype == np.int64 for v in tokens.values())
    assert all(0 <= v.min() and v.max() < 1296 for v in tokens.values())
    loaded = load_token_cache(cache)
    assert loaded.keys() == tokens.keys() and all(np.array_equal(loaded[k], tokens[k]) for k in tokens)
    tok, pre, _, _ = load_tokenizer(ckpt)
    ids = sorted(tokens)[:5]
    _, x, _ = load_signals(ptbxl, ids, pre, progress=False)
    assert np.array_equal(encode_signals(tok, x, batch_size=2), np.stack([tokens[i] for i in ids]))


# --- unit tests without a training run ---------------------------------------------------------------

def _tiny_tokenizer(seed: int = 0) -> EcgTokenizer:
    torch.manual_seed(seed)
    return EcgTokenizer(dataclasses.replace(EncoderConfig(n_samples=1000), **TINY), FSQConfig())


def _configs(tok: EcgTokenizer) -> dict:
    return {ManifestKey.PREPROCESS: PreprocessConfig(fs_hz=100), ManifestKey.ENCODER: tok.encoder_cfg,
            ManifestKey.FSQ: tok.fsq_cfg}


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


def test_load_signals_skips_and_counts_invalid_records(ptbxl_root: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
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
        kept, x, skipped = load_signals(PtbxlDataset(root), ids, PreprocessConfig(fs_hz=100), progress=False)
    assert kept == [ids[0], ids[2]] and x.shape == (2, 12, 1000) and list(skipped) == [ids[1]]
    assert "skipped 1 of 3" in caplog.text


@pytest.mark.parametrize(("change", "field"), [
    ({"eval_folds": (10,)}, "eval_folds"),
    ({"train_folds": (1, 2, 10)}, "train_folds"),
    ({"eval_folds": (8,)}, "eval_folds"),
    ({"init_dir": "x"}, "init_dir"),
    ({"preset": "250hz"}, "preset"),
    ({"steps": 0}, "steps"),
])
def test_config_rejects_bad_values(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TokenizerTrainConfig(**change)


def test_config_overrides_reach_the_architecture() -> None:
    pre, enc, fsq = TokenizerTrainConfig(preset="500hz", stage_channels=(16, 16, 32, 32), groups=8,
                                         fsq_levels=(8, 5, 5, 5)).model_configs()
    assert pre.fs_hz == 500 and enc.n_frames == 313 and enc.stage_channels == (16, 16, 32, 32)
    assert fsq.codebook_size == 1000
    with pytest.raises(ValueError, match="groups"):
        TokenizerTrainConfig(stem_channels=12, groups=8).model_configs()
