"""What an LLM stage checkpoint is besides its weights: ``LlmMeta`` and its ``llm_meta.json``.

Torch-free, so that what only reads a checkpoint's description (its stage, vocabulary, prompt, folds and
lineage) needs no torch; the weights are saved and loaded by ``diagecg.nn.llm_checkpoint``, whose
docstring describes the whole folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from diagecg import __version__
from diagecg.config import ConfigMixin, GenerationConfig, VocabConfig, check_field
from diagecg.constants import LLM_CHECKPOINT_VERSION, LLM_META
from diagecg.errors import CheckpointError
from diagecg.prompts import PromptConfig

STAGES: tuple[str, ...] = ("pretrain", "instruct")
METHODS: tuple[str, ...] = ("full", "lora")
BASE_KINDS: tuple[str, ...] = ("hf", "llm_checkpoint")


@dataclasses.dataclass(frozen=True)
class BaseModelRef(ConfigMixin):
    """The model a checkpoint started from; for LoRA, the model its adapter applies to."""

    path: str = ""  # relative to the checkpoint folder when `copied`, else absolute
    kind: Literal["hf", "llm_checkpoint"] = "hf"  # an HF folder, or another stage folder (loaded merged)
    copied: bool = False
    name: str = ""  # what it is: the original path or model id, or the demo model's description
    model_type: str = ""  # HF config.model_type: llama | qwen2 | mistral
    demo: bool = False  # the tiny from-scratch demonstration model (diagecg.training.base_model)

    def __post_init__(self) -> None:
        check_field(self.kind in BASE_KINDS, "BaseModelRef", "kind", self.kind, f"one of {BASE_KINDS}")


@dataclasses.dataclass(frozen=True)
class StageRecord(ConfigMixin):
    """One training stage behind a checkpoint: which PTB-XL folds it trained and validated on, and its
    config. Later stages copy their predecessors' records, so the lineage of a checkpoint is exact."""

    stage: str = ""  # "tokenizer" | "pretrain" | "instruct"
    train_folds: tuple[int, ...] = ()
    valid_folds: tuple[int, ...] = ()  # used for validation losses / model selection, never for gradients
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LlmMeta(ConfigMixin):
    """Everything that defines an LLM stage checkpoint besides its weights (``llm_meta.json``)."""

    stage: Literal["pretrain", "instruct"] = "pretrain"
    method: Literal["full", "lora"] = "full"
    vocab: VocabConfig = dataclasses.field(default_factory=VocabConfig)
    prompt: PromptConfig = dataclasses.field(default_factory=PromptConfig)
    generation: GenerationConfig = dataclasses.field(default_factory=GenerationConfig)
    base_model: BaseModelRef = dataclasses.field(default_factory=BaseModelRef)
    preset: str | None = None  # the stage-1 preset ("100hz" | "500hz"), when known
    train_folds: tuple[int, ...] = ()  # PTB-XL folds this stage trained on
    valid_folds: tuple[int, ...] = ()  # folds used for validation loss / model selection
    lineage: tuple[StageRecord, ...] = ()  # every stage up to and including this one, oldest first
    format_version: int = LLM_CHECKPOINT_VERSION
    diagecg_version: str = __version__

    def __post_init__(self) -> None:
        n = "LlmMeta"
        check_field(self.stage in STAGES, n, "stage", self.stage, f"one of {STAGES}")
        check_field(self.method in METHODS, n, "method", self.method, f"one of {METHODS}")


def has_llm_checkpoint(ckpt_dir: str | Path) -> bool:
    """True when ``ckpt_dir`` holds a complete LLM checkpoint (its ``llm_meta.json`` exists)."""
    return (Path(ckpt_dir) / LLM_META).is_file()


def read_llm_meta(ckpt_dir: str | Path) -> LlmMeta:
    """The checkpoint's metadata, version-checked.

    Raises:
        FileNotFoundError: no ``llm_meta.json`` (not a checkpoint, or an interrupted save).
        CheckpointError: another format version.
    """
    path = Path(ckpt_dir) / LLM_META
    if not path.is_file():
        raise FileNotFoundError(
            f"{ckpt_dir} is not an LLM checkpoint: {LLM_META} not found "
            f"(give the --out folder of `diagecg train pretrain` or `train instruct`)"
        )
    meta = LlmMeta.load(path)
    if meta.format_version != LLM_CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {meta.format_version}, this diagecg reads {LLM_CHECKPOINT_VERSION}"
        )
    return meta
