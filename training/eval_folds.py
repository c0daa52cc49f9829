"""Which PTB-XL folds an LLM checkpoint's stages used, so that ``diagecg eval`` never tests on a fold the
model trained on (torch-free: read from ``llm_meta.json`` and ``run_summary.json``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from diagecg.constants import RUN_SUMMARY
from diagecg.errors import ConfigError
from diagecg.llm_meta import has_llm_checkpoint, read_llm_meta
from diagecg.training.eval_data import EvalConfig

logger = logging.getLogger(__name__)


def _fold_lists(obj: Any) -> dict[str, tuple[int, ...]]:
    """Every ``*folds`` key of a run summary (top level, else under ``config``) holding fold numbers."""
    out: dict[str, tuple[int, ...]] = {}
    if not isinstance(obj, dict):
        return out
    for source in (obj.get("config"), obj):  # the top level wins
        if isinstance(source, dict):
            for key, value in source.items():
                if (
                    key.endswith("folds")
                    and isinstance(value, (list, tuple))
                    and value
                    and all(isinstance(v, int) for v in value)
                ):
                    out[key] = tuple(value)
    return out


def checkpoint_training_folds(checkpoint_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Every PTB-XL fold the checkpoint's stages used.

    A checkpoint with a lineage (``LlmMeta.lineage``: every stage from the ECG tokenizer on, with
    its train and validation folds) answers exactly. Older checkpoints are followed as before:
    Follows the chain of LLM stages (instruct -> the pretrain checkpoint it started from, when
    ``meta.base_model`` names one) and reads each stage's ``llm_meta.json`` (``train_folds``,
    ``valid_folds``) and every ``*folds`` list of its ``run_summary.json`` (top level or under
    ``config``; e.g. ``pretrain_train_folds``). Keys ending in ``train_folds`` are training folds.

    Returns:
        ``{"<stage>.<key>": folds}``, e.g. ``{"instruct.train_folds": (1, ..., 8)}``; empty when
        nothing is recorded.
    """
    if has_llm_checkpoint(checkpoint_dir):
        lineage = read_llm_meta(checkpoint_dir).lineage
        if lineage:  # recorded by every stage and carried forward: exact
            exact: dict[str, tuple[int, ...]] = {}
            for rec in lineage:
                for key in ("train_folds", "valid_folds"):
                    if getattr(rec, key):
                        exact[f"{rec.stage}.{key}"] = tuple(sorted(getattr(rec, key)))
            return exact
    found: dict[str, tuple[int, ...]] = {}
    d: Path | None = Path(checkpoint_dir).resolve()
    seen: set[Path] = set()
    while d is not None and d not in seen:
        seen.add(d)
        meta = read_llm_meta(d) if has_llm_checkpoint(d) else None
        label = meta.stage if meta is not None else d.name
        while any(k.startswith(label + ".") for k in found):
            label += "'"
        summary: Any = None
        if (d / RUN_SUMMARY).is_file():
            try:
                summary = json.loads((d / RUN_SUMMARY).read_text())
            except json.JSONDecodeError:
                logger.warning("cannot read %s; its folds are unknown", d / RUN_SUMMARY)
        lists = _fold_lists(summary)
        for key in ("train_folds", "valid_folds"):
            lists[key] = tuple(sorted(set(lists.get(key, ())) | set(getattr(meta, key, ()) or ())))
        found.update({f"{label}.{k}": tuple(sorted(v)) for k, v in sorted(lists.items()) if v})
        next_dir = None
        if meta is not None and meta.base_model.kind == "llm_checkpoint":
            ref = meta.base_model
            base = d / ref.path if ref.copied else Path(ref.path)
            next_dir = base.resolve() if base.is_dir() else None
        d = next_dir
    return found


def check_folds(cfg: EvalConfig, recorded: dict[str, tuple[int, ...]]) -> None:
    """Refuse to evaluate on folds a stage trained on; warn on folds used for model selection.

    Raises:
        ConfigError: ``cfg.folds`` overlaps recorded training folds.
    """
    for name, folds in recorded.items():
        overlap = sorted(set(cfg.folds) & set(folds))
        if not overlap:
            continue
        if name.endswith("train_folds"):
            raise ConfigError(
                f"EvalConfig.folds={cfg.folds} overlaps the checkpoint's training folds "
                f"({name}={folds}): evaluate on held-out folds only"
            )
        logger.warning("evaluating on fold(s) %s that the checkpoint used for validation (%s)", overlap, name)
    if not recorded:
        logger.warning(
            "%s records no training folds; assuming folds %s were held out", cfg.checkpoint_dir, cfg.folds
        )
