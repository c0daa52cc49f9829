"""Self-describing training checkpoints: {config, weights, step}, no pickle
(conventions: self-describing artifacts).

A checkpoint folder holds

- ``constants.CHECKPOINT_WEIGHTS``: the model state dict (safetensors);
- ``constants.CHECKPOINT_CONFIG``: every config that defines the artifact, as
  JSON keyed by ``ManifestKey.PREPROCESS`` / ``ENCODER`` / ``FSQ`` / ``TRAINING``;
- ``constants.CHECKPOINT_OPTIMIZER``: the optimiser's tensor state (safetensors);
- ``constants.CHECKPOINT_STATE``: step, the optimiser's scalar state and
  param groups, and free-form ``extra`` (JSON). It is written last, so a
  folder without it is an interrupted save.

Loaders build the model from the stored configs, never from defaults.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diagecg import __version__
from diagecg.config import ConfigMixin, EncoderConfig, FSQConfig, PreprocessConfig, SummaryConfig
from diagecg.constants import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    ManifestKey,
)
from diagecg.errors import CheckpointError
from diagecg.nn.ecg_tokenizer import EcgTokenizer

logger = logging.getLogger(__name__)


def _replace(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)  # atomic on one file system: a crash never leaves half a file


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    _replace(tmp, path)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    _replace(tmp, path)


def _require(ckpt_dir: Path, name: str) -> Path:
    p = ckpt_dir / name
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt_dir}: {name} not found")
    return p


def has_checkpoint(ckpt_dir: str | Path) -> bool:
    """True when ``ckpt_dir`` holds a complete checkpoint (weights, config and trainer state)."""
    d = Path(ckpt_dir)
    return all((d / n).is_file() for n in (CHECKPOINT_WEIGHTS, CHECKPOINT_CONFIG, CHECKPOINT_STATE))


def save_checkpoint(
    ckpt_dir: str | Path,
    model: nn.Module,
    configs: dict[str, ConfigMixin],
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights, configs, optimiser state and step into ``ckpt_dir`` (created if missing).

    Args:
        ckpt_dir: the checkpoint folder; existing checkpoint files are replaced.
        model: its ``state_dict()`` goes to safetensors (non-persistent buffers are not stored).
        configs: name -> config, e.g. ``{ManifestKey.ENCODER: encoder_cfg, ...}``.
        step: optimisation steps done so far.
        optimizer: if given, its tensor state goes to safetensors and its scalars to JSON.
        extra: JSON-serialisable trainer state (best metric, rng seed...).

    Returns:
        The checkpoint folder.
    """
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    _write_tensors(d / CHECKPOINT_WEIGHTS, dict(model.state_dict()))
    _write_json(d / CHECKPOINT_CONFIG, {name: cfg.to_dict() for name, cfg in configs.items()})
    state: dict[str, Any] = {
        "step": int(step),
        "extra": extra or {},
        "optimizer": None,
        ManifestKey.DIAGECG_VERSION: __version__,
    }
    if optimizer is not None:
        sd = optimizer.state_dict()
        tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, Any] = {}
        for pid, param_state in sd["state"].items():
            for name, value in param_state.items():
                key = f"{pid}.{name}"
                if torch.is_tensor(value):
                    tensors[key] = value
                else:
                    scalars[key] = value
        _write_tensors(d / CHECKPOINT_OPTIMIZER, tensors)
        state["optimizer"] = {
            "class": type(optimizer).__name__,
            "param_groups": sd["param_groups"],
            "scalars": scalars,
        }
    _write_json(d / CHECKPOINT_STATE, state)  # last: marks the checkpoint complete
    logger.info("saved checkpoint at step %d to %s", step, d)
    return d


def read_configs(ckpt_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The raw config dicts stored in ``ckpt_dir`` (name -> dict)."""
    return json.loads(_require(Path(ckpt_dir), CHECKPOINT_CONFIG).read_text())


def read_trainer_state(ckpt_dir: str | Path) -> dict[str, Any]:
    """The trainer state of ``ckpt_dir``: ``step``, ``extra``, the diagecg version, ``optimizer``."""
    return json.loads(_require(Path(ckpt_dir), CHECKPOINT_STATE).read_text())


def load_weights(ckpt_dir: str | Path, model: nn.Module) -> None:
    """Load the stored weights into ``model`` (strict).

    Raises:
        FileNotFoundError: no weights file.
        CheckpointError: missing or unexpected tensors, or shape mismatches.
    """
    path = _require(Path(ckpt_dir), CHECKPOINT_WEIGHTS)
    stored = load_file(str(path), device="cpu")
    own = model.state_dict()
    missing = sorted(set(own) - set(stored))
    unexpected = sorted(set(stored) - set(own))
    bad_shape = sorted(k for k in set(own) & set(stored) if own[k].shape != stored[k].shape)
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            f"{path} does not match the model built from its config: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {bad_shape[:5]}"
        )
    model.load_state_dict(stored, strict=True)


def load_optimizer_state(ckpt_dir: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimiser state saved by ``save_checkpoint`` (for resuming).

    Raises:
        CheckpointError: no optimiser state was saved, or it belongs to another optimiser class.
    """
    d = Path(ckpt_dir)
    meta = read_trainer_state(d).get("optimizer")
    if meta is None:
        raise CheckpointError(f"checkpoint {d} holds no optimiser state")
    if meta["class"] != type(optimizer).__name__:
        raise CheckpointError(
            f"checkpoint {d} holds {meta['class']} state, cannot load into {type(optimizer).__name__}"
        )
    tensors = load_file(str(_require(d, CHECKPOINT_OPTIMIZER)), device="cpu")
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]  # JSON turned tuples (betas) into lists
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {d}: optimiser state does not fit this model: {e}") from e


def load_tokenizer(
    ckpt_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[EcgTokenizer, PreprocessConfig, EncoderConfig, FSQConfig]:
    """Build an EcgTokenizer from the configs stored in ``ckpt_dir`` and load its weights.

    Args:
        ckpt_dir: a folder written by ``train_tokenizer`` (``save_checkpoint``).
        device: where to put the model.

    Returns:
        (tokenizer in eval mode, preprocess config, encoder config, FSQ config); the summary config,
        when the checkpoint has one, is ``tokenizer.summary_cfg``.

    Raises:
        FileNotFoundError: a checkpoint file is missing.
        CheckpointError: a config is missing, or the weights do not fit the stored config.
    """
    d = Path(ckpt_dir)
    configs = read_configs(d)
    for key in (ManifestKey.PREPROCESS, ManifestKey.ENCODER, ManifestKey.FSQ):
        if key not in configs:
            raise CheckpointError(
                f"checkpoint {d}: {CHECKPOINT_CONFIG} has no {key!r} config (keys: {sorted(configs)})"
            )
    preprocess_cfg = PreprocessConfig.from_dict(configs[ManifestKey.PREPROCESS])
    encoder_cfg = EncoderConfig.from_dict(configs[ManifestKey.ENCODER])
    fsq_cfg = FSQConfig.from_dict(configs[ManifestKey.FSQ])
    if preprocess_cfg.n_samples != encoder_cfg.n_samples:
        raise CheckpointError(
            f"checkpoint {d}: preprocess gives {preprocess_cfg.n_samples} samples but the "
            f"encoder expects {encoder_cfg.n_samples}"
        )
    summary_cfg = (
        SummaryConfig.from_dict(configs[ManifestKey.SUMMARY]) if ManifestKey.SUMMARY in configs else None
    )  # absent: a tokenizer without summary tokens
    model = EcgTokenizer(encoder_cfg, fsq_cfg, summary_cfg)
    load_weights(d, model)
    model.to(device).eval()
    return model, preprocess_cfg, encoder_cfg, fsq_cfg
