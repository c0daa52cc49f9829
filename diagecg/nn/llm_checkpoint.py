"""The self-describing folder of an LLM stage (pretrain or instruct), read by training, evaluation and export.

Layout of a checkpoint folder (names from ``diagecg.constants``)::

    <dir>/
      llm_meta.json        LLM_META: LlmMeta (format_version, stage, method, vocab, prompt, generation,
                           base_model, preset, train/valid folds, diagecg_version; ``diagecg.llm_meta``,
                           torch-free). Written LAST: a folder without it is an interrupted save.
      text_tokenizer.json  LLM_TEXT_TOKENIZER: the base text tokenizer (``tokenizers`` JSON) WITHOUT the ECG
                           tokens; ``diagecg.prompts.encode_prompt`` tokenizes every text piece with it, in
                           training and in the runtime (the bundle ships it as tokenizer.json).
      tokenizer/           LLM_HF_TOKENIZER_DIR: the transformers tokenizer WITH the ECG tokens (special added
                           tokens <ecg_0000>.. then <ecg>, </ecg>), one id per embedding row it names.
      model/               LLM_MODEL_DIR, method "full": the HF model folder (config.json, safetensors,
                           generation_config.json), embedding table already extended.
      adapter/             LLM_ADAPTER_DIR, method "lora": the peft adapter (adapter_config.json +
                           adapter_model.safetensors; holds the trained rows of the ECG tokens too).
      base_model/          LLM_BASE_DIR, method "lora" when the base was small enough to copy: the model the
                           adapter applies to, as it was BEFORE the vocabulary extension ("hf" kind: an HF
                           folder) or another stage folder ("llm_checkpoint" kind, loaded merged).
                           Big bases are not copied: ``meta.base_model.path`` is then an absolute path,
                           checked on load.
      ecg_tokenizer/       LLM_ECG_TOKENIZER_DIR: copy of the stage-1 checkpoint (``diagecg.nn.checkpoint``:
                           model.safetensors, config.json, trainer_state.json; ecg_tokens.npz when cached).
      run_summary.json     RUN_SUMMARY, written by the training stage (losses, folds, timings).
      train_state/         LLM_TRAIN_STATE_DIR, optional: optimiser state and step for ``--resume``
                           (trainer_state.json + optimizer.safetensors, the format of diagecg.nn.checkpoint).

To get a plain transformers model for export: ``model, hf_tok, meta, paths = load_llm_checkpoint(d,
merge=True)``; the base embedding table is resized to ``meta.vocab.vocab_size`` rows before the adapter
is applied (rows are never removed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from diagecg import __version__
from diagecg.config import VocabConfig
from diagecg.constants import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_STATE,
    CHECKPOINT_WEIGHTS,
    ECG_TOKEN_CACHE,
    LLM_ADAPTER_DIR,
    LLM_BASE_DIR,
    LLM_CHECKPOINT_VERSION,
    LLM_ECG_TOKENIZER_DIR,
    LLM_HF_TOKENIZER_DIR,
    LLM_META,
    LLM_MODEL_DIR,
    LLM_TEXT_TOKENIZER,
    LLM_TRAIN_STATE_DIR,
    RUN_SUMMARY,
)
from diagecg.errors import CheckpointError
from diagecg.llm_meta import BaseModelRef, LlmMeta, read_llm_meta
from diagecg.llm_meta import StageRecord as StageRecord  # re-exported: the training stages import it here
from diagecg.llm_meta import has_llm_checkpoint as has_llm_checkpoint  # re-exported, likewise
from diagecg.nn.checkpoint import _write_json, _write_tensors, load_optimizer_state, read_trainer_state
from diagecg.vocab import check_vocab, ecg_code_ids, special_token_strings, strip_ecg_tokens

logger = logging.getLogger(__name__)

COPY_BASE_MAX_BYTES = 2 * 1024**3  # a LoRA base up to this size is copied into the folder (self-contained)
_ECG_TOKENIZER_FILES = (CHECKPOINT_WEIGHTS, CHECKPOINT_CONFIG, CHECKPOINT_STATE)  # required
_ECG_TOKENIZER_EXTRA = (ECG_TOKEN_CACHE, RUN_SUMMARY)  # copied when present


@dataclasses.dataclass(frozen=True)
class LlmCheckpointPaths:
    """Where the parts of a loaded checkpoint are (absolute paths; None when absent)."""

    root: Path
    meta: Path
    text_tokenizer: Path
    hf_tokenizer_dir: Path
    ecg_tokenizer_dir: Path
    run_summary: Path
    train_state_dir: Path
    model_dir: Path | None = None  # method "full"
    adapter_dir: Path | None = None  # method "lora"
    base_model_dir: Path | None = None  # method "lora": the resolved base folder


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def text_tokenizer_json(hf_tokenizer: Any, vocab: VocabConfig) -> str:
    """The base text tokenizer (ECG tokens removed) of an extended transformers fast tokenizer, as JSON.

    Raises:
        CheckpointError: the tokenizer is not a fast one, or its ECG tokens disagree with ``vocab``.
    """
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(f"{type(hf_tokenizer).__name__} is not a fast (tokenizers-backed) tokenizer")
    try:
        stripped = strip_ecg_tokens(json.loads(backend.to_str()), vocab)
    except ValueError as e:
        raise CheckpointError(f"the tokenizer's ECG tokens disagree with the vocab config: {e}") from e
    from tokenizers import Tokenizer

    text = json.dumps(stripped, ensure_ascii=False)
    n = Tokenizer.from_str(text).get_vocab_size(with_added_tokens=True)
    if vocab.base_vocab_size and n != vocab.base_vocab_size:
        raise CheckpointError(
            f"the text tokenizer has {n} tokens, vocab.base_vocab_size={vocab.base_vocab_size}"
        )
    return text


def _copy_ecg_tokenizer(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    missing = [n for n in _ECG_TOKENIZER_FILES if not (src / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"stage-1 checkpoint {src} lacks {missing} (give the --out folder of `diagecg train tokenizer`)"
        )
    dst.mkdir(parents=True, exist_ok=True)
    for name in (*_ECG_TOKENIZER_FILES, *_ECG_TOKENIZER_EXTRA):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def _store_base(out: Path, ref: BaseModelRef, copy_base: bool | None) -> BaseModelRef:
    """Copy the LoRA base into ``out/base_model`` (small bases) or keep its absolute path."""
    if ref.copied:
        if not (out / ref.path).exists():
            raise CheckpointError(
                f"meta.base_model says {ref.path!r} is copied into {out}, but it is not there"
            )
        return ref
    src = Path(ref.path).expanduser().resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"base model folder {src} not found")
    size = _folder_bytes(src)
    do_copy = size <= COPY_BASE_MAX_BYTES if copy_base is None else copy_base
    if not do_copy:
        logger.info("base model %s (%.1f GB) is referenced by absolute path, not copied", src, size / 1e9)
        return dataclasses.replace(ref, path=str(src))
    dst = out / LLM_BASE_DIR
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(LLM_TRAIN_STATE_DIR))
    return dataclasses.replace(ref, path=LLM_BASE_DIR, copied=True)


def save_llm_checkpoint(
    out_dir: str | Path,
    model: Any,
    hf_tokenizer: Any,
    meta: LlmMeta,
    ecg_tokenizer_dir: str | Path,
    *,
    copy_base: bool | None = None,
) -> Path:
    """Write an LLM stage checkpoint (layout in the module docstring).

    Args:
        out_dir: the folder (created; files of an earlier save are replaced).
        model: a transformers causal LM (``meta.method == "full"``) or a peft model wrapping one
            (``"lora"``); its embedding table must have ``meta.vocab.vocab_size`` rows.
        hf_tokenizer: the extended transformers fast tokenizer.
        meta: the metadata; for LoRA ``meta.base_model.path`` names the base folder to copy or reference.
        ecg_tokenizer_dir: the stage-1 checkpoint folder (copied).
        copy_base: LoRA only: copy the base into the folder (True), reference it (False), or decide by
            size (None: copy up to ``COPY_BASE_MAX_BYTES``).

    Returns:
        ``out_dir``.

    Raises:
        CheckpointError: method and model disagree, or the vocabulary does not fit the model/tokenizer.
        FileNotFoundError: the stage-1 checkpoint or the LoRA base folder is missing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        check_vocab(meta.vocab)
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != meta.vocab.vocab_size:
        raise CheckpointError(
            f"the model has {rows} embedding rows, meta.vocab.vocab_size={meta.vocab.vocab_size}"
        )
    peft = _is_peft(model)
    if peft != (meta.method == "lora"):
        raise CheckpointError(
            f"meta.method={meta.method!r} but the model is "
            f"{'a peft' if peft else 'a plain transformers'} model"
        )
    text_json = text_tokenizer_json(hf_tokenizer, meta.vocab)  # checks the ECG ids before writing anything

    (out / LLM_META).unlink(missing_ok=True)  # re-written last: its absence marks an interrupted save
    stale = out / (LLM_MODEL_DIR if peft else LLM_ADAPTER_DIR)
    if stale.exists():
        shutil.rmtree(stale)
    if peft:
        meta = dataclasses.replace(meta, base_model=_store_base(out, meta.base_model, copy_base))
        # The resized embedding rows are the ECG tokens, stored by value as trainable tokens: no need for
        # peft's "auto" choice of saving both full (vocab x hidden) tables of a resized model.
        config = model.peft_config[getattr(model, "active_adapter", "default")]
        tokens_trained = getattr(config, "trainable_token_indices", None) is not None
        model.save_pretrained(
            str(out / LLM_ADAPTER_DIR), save_embedding_layers=False if tokens_trained else "auto"
        )
    else:
        model.save_pretrained(str(out / LLM_MODEL_DIR))
    hf_tokenizer.save_pretrained(str(out / LLM_HF_TOKENIZER_DIR))
    (out / LLM_TEXT_TOKENIZER).write_text(text_json, encoding="utf-8")
    _copy_ecg_tokenizer(Path(ecg_tokenizer_dir), out / LLM_ECG_TOKENIZER_DIR)
    meta = dataclasses.replace(meta, diagecg_version=__version__, format_version=LLM_CHECKPOINT_VERSION)
    meta.save(out / LLM_META)
    logger.info("saved %s %s checkpoint to %s", meta.stage, meta.method, out)
    return out


def _check_tokenizer(hf_tokenizer: Any, vocab: VocabConfig, where: Path) -> None:
    strings = special_token_strings(vocab.n_codes)
    expected = [*ecg_code_ids(vocab), vocab.start_id, vocab.end_id]
    got = hf_tokenizer.convert_tokens_to_ids(strings)
    bad = [(s, g, e) for s, g, e in zip(strings, got, expected, strict=True) if g != e]
    if bad:
        s, g, e = bad[0]
        raise CheckpointError(
            f"{where}: tokenizer maps {s} to {g}, llm_meta.json says {e} ({len(bad)} ECG tokens differ)"
        )


def _resolve_base(root: Path, ref: BaseModelRef) -> Path:
    path = root / ref.path if ref.copied else Path(ref.path)
    if not path.is_dir():
        raise CheckpointError(
            f"{root}: the LoRA base model {path} is missing (meta.base_model={ref.name or ref.path!r});"
            f" restore it there or retrain"
        )
    return path


def load_llm_checkpoint(
    ckpt_dir: str | Path,
    merge: bool = False,
    *,
    trainable: bool = False,
    **model_kwargs: Any,
) -> tuple[Any, Any, LlmMeta, LlmCheckpointPaths]:
    """Load an LLM stage checkpoint.

    Args:
        ckpt_dir: a folder written by :func:`save_llm_checkpoint`.
        merge: LoRA only: fold the adapter into the base and return a plain transformers model.
        trainable: LoRA only: load the adapter trainable (resuming training); otherwise eval mode.
        **model_kwargs: passed to ``from_pretrained`` of the (base) model, e.g. ``dtype``,
            ``quantization_config``, ``device_map``.

    Returns:
        (model, extended transformers tokenizer, meta, paths).

    Raises:
        FileNotFoundError: not a checkpoint folder.
        CheckpointError: wrong format version, missing parts, a missing LoRA base, or tokenizer/model
            disagreeing with the stored vocabulary.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(ckpt_dir).resolve()
    meta = read_llm_meta(root)
    paths = LlmCheckpointPaths(
        root=root,
        meta=root / LLM_META,
        text_tokenizer=root / LLM_TEXT_TOKENIZER,
        hf_tokenizer_dir=root / LLM_HF_TOKENIZER_DIR,
        ecg_tokenizer_dir=root / LLM_ECG_TOKENIZER_DIR,
        run_summary=root / RUN_SUMMARY,
        train_state_dir=root / LLM_TRAIN_STATE_DIR,
        model_dir=root / LLM_MODEL_DIR if meta.method == "full" else None,
        adapter_dir=root / LLM_ADAPTER_DIR if meta.method == "lora" else None,
        base_model_dir=_resolve_base(root, meta.base_model) if meta.method == "lora" else None,
    )
    for p in (
        paths.text_tokenizer,
        paths.hf_tokenizer_dir,
        paths.ecg_tokenizer_dir / CHECKPOINT_CONFIG,
        paths.model_dir or paths.adapter_dir,
    ):
        if p is not None and not p.exists():
            raise CheckpointError(f"{root}: {p.relative_to(root)} is missing")
    hf_tokenizer = AutoTokenizer.from_pretrained(str(paths.hf_tokenizer_dir))
    _check_tokenizer(hf_tokenizer, meta.vocab, root)

    model: Any
    if meta.method == "full":
        model = AutoModelForCausalLM.from_pretrained(str(paths.model_dir), **model_kwargs)
    else:
        from peft import PeftModel

        assert paths.base_model_dir is not None
        if meta.base_model.kind == "llm_checkpoint":
            base, _, _, _ = load_llm_checkpoint(paths.base_model_dir, merge=True, **model_kwargs)
        else:
            base = AutoModelForCausalLM.from_pretrained(str(paths.base_model_dir), **model_kwargs)
        rows = base.get_input_embeddings().weight.shape[0]
        if rows > meta.vocab.vocab_size:
            raise CheckpointError(
                f"{root}: the base has {rows} embedding rows, more than "
                f"vocab.vocab_size={meta.vocab.vocab_size}: wrong base model?"
            )
        if rows < meta.vocab.vocab_size:  # the base as it was before the vocabulary extension
            base.resize_token_embeddings(meta.vocab.vocab_size, mean_resizing=False)
        model = PeftModel.from_pretrained(base, str(paths.adapter_dir), is_trainable=trainable)
        if merge:
            model = model.merge_and_unload()
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != meta.vocab.vocab_size:
        raise CheckpointError(
            f"{root}: the model has {rows} embedding rows, vocab.vocab_size={meta.vocab.vocab_size}"
        )
    if not trainable:
        model.eval()
    return model, hf_tokenizer, meta, paths


# --- optimiser state for --resume (the file format of diagecg.nn.checkpoint) --------------------------


def save_train_state(
    ckpt_dir: str | Path, optimizer: torch.optim.Optimizer, step: int, extra: dict[str, Any] | None = None
) -> Path:
    """Write the optimiser state and step into ``ckpt_dir/train_state`` (read by :func:`load_train_state`)."""
    d = Path(ckpt_dir) / LLM_TRAIN_STATE_DIR
    d.mkdir(parents=True, exist_ok=True)
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, param_state in sd["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    _write_tensors(d / CHECKPOINT_OPTIMIZER, tensors)
    _write_json(
        d / CHECKPOINT_STATE,
        {
            "step": int(step),
            "extra": extra or {},
            "diagecg_version": __version__,
            "optimizer": {
                "class": type(optimizer).__name__,
                "param_groups": sd["param_groups"],
                "scalars": scalars,
            },
        },
    )
    return d


def load_train_state(ckpt_dir: str | Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Restore the optimiser saved by :func:`save_train_state`; returns (step, extra).

    Raises:
        FileNotFoundError: no train state in ``ckpt_dir``.
        CheckpointError: the state belongs to another optimiser or model.
    """
    d = Path(ckpt_dir) / LLM_TRAIN_STATE_DIR
    load_optimizer_state(d, optimizer)
    state = read_trainer_state(d)
    return int(state["step"]), dict(state.get("extra") or {})
