"""The training stages' configs, in one torch-free module: ``diagecg train ... --print-config`` and the
CLI's options need no torch.

One frozen dataclass per stage (conventions: configs): ``TokenizerTrainConfig`` for stage 1,
and for the two LLM stages a shared base, :class:`LlmStageConfig` (data, LoRA, optimiser, schedule,
device; validated once), with :class:`PretrainConfig` and :class:`SFTConfig` adding their own fields
and defaults, as peft's ``PeftConfig`` is subclassed per method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from diagecg.config import (
    PRESETS,
    ConfigMixin,
    EncoderConfig,
    FSQConfig,
    PreprocessConfig,
    check_field,
    preset,
)
from diagecg.datasets.ptbxl import TEST_FOLDS, TRAIN_FOLDS, VALID_FOLDS

TASKS: tuple[str, ...] = ("qa", "report")  # what instruction tuning trains on


def _check_folds(cfg: Any, n: str, held_out: str) -> None:
    """``cfg.train_folds`` and ``cfg.<held_out>``: non-empty PTB-XL folds 1-10, never the test fold(s),
    and disjoint."""
    train = cfg.train_folds
    for name in ("train_folds", held_out):
        folds = getattr(cfg, name)
        check_field(
            len(folds) > 0 and all(1 <= f <= 10 for f in folds),
            n,
            name,
            folds,
            "a non-empty tuple of PTB-XL folds 1-10",
        )
        check_field(
            not set(folds) & set(TEST_FOLDS),
            n,
            name,
            folds,
            f"must not contain the test fold(s) {TEST_FOLDS}",
        )
    check_field(
        not set(train) & set(getattr(cfg, held_out)),
        n,
        held_out,
        getattr(cfg, held_out),
        f"must be disjoint from train_folds {train}",
    )


# HF config.model_type -> linear layers LoRA adapts (attention + MLP); other types need lora_target_modules
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


@dataclasses.dataclass(frozen=True)
class TokenizerTrainConfig(ConfigMixin):
    """Everything stage 1 needs; the architecture is the preset's unless ``encoder`` or ``fsq`` is set.

    A partial ``encoder``/``fsq`` object (JSON, or ``--set encoder.stem_channels=8``) is completed from
    the preset's, so only the changed widths need writing.
    """

    data_dir: str = "data"  # shared data root (holding ptbxl/) or the ptbxl folder itself
    # also the records of ptbxl_full/ beside ptbxl/ when the data root has it (diagecg.datasets.ptbxl)
    ptbxl_full: bool = True
    out_dir: str = "runs/tokenizer"  # checkpoint + run summary go here
    preset: str = "100hz"  # key of diagecg.config.PRESETS
    train_folds: tuple[int, ...] = TRAIN_FOLDS
    eval_folds: tuple[int, ...] = VALID_FOLDS
    max_train_records: int | None = None  # seeded random subset of the train folds; None = all
    max_eval_records: int | None = None
    steps: int = 3000  # total optimisation steps (including those before a resume); sets the lr schedule
    stop_at_step: int | None = None  # end this run early at this step (resume later); None = run to `steps`
    batch_size: int = 16
    lr: float = 2e-3  # AdamW peak learning rate
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    l1_weight: float = 0.0  # extra L1 reconstruction term (sharper R peaks); 0 = pure MSE
    # diagnostic summary tokens (diagecg.nn.summary); summary=False is the paper's tokenizer
    summary: bool = True
    summary_levels: int = 8  # FSQ levels per finding
    summary_min_positives: int = 8  # a statement gets a summary token with this many training positives
    summary_weight: float = 1.0  # weight of the findings' binary cross-entropy beside the reconstruction MSE
    summary_hidden: int = 128
    # binned measurement tokens after the finding tokens (diagecg.features.MEASURE_TOKEN_EDGES); needs summary
    measure_tokens: bool = True
    augment: bool = True  # random gain and noise in mV (other devices), before z-score and measurements
    seed: int = 0
    eval_every: int = 250  # also the checkpoint interval
    log_every: int = 25
    resume: bool = False  # continue from the checkpoint in out_dir (architecture taken from it)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = True  # bf16 autocast on CUDA (FSQ itself always runs in float32); ignored on CPU
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    progress: bool = True  # tqdm bars
    encoder: EncoderConfig | None = None  # None = the preset's
    fsq: FSQConfig | None = None  # None = the preset's

    def __post_init__(self) -> None:
        n = "TokenizerTrainConfig"
        check_field(self.preset in PRESETS, n, "preset", self.preset, f"one of {sorted(PRESETS)}")
        _check_folds(self, n, "eval_folds")
        for name in ("max_train_records", "max_eval_records"):
            v = getattr(self, name)
            check_field(v is None or v >= 1, n, name, v, "None or >= 1")
        check_field(self.steps >= 1, n, "steps", self.steps, "must be >= 1")
        check_field(
            self.stop_at_step is None or 1 <= self.stop_at_step <= self.steps,
            n,
            "stop_at_step",
            self.stop_at_step,
            f"None or in [1, steps={self.steps}]",
        )
        check_field(self.batch_size >= 1, n, "batch_size", self.batch_size, "must be >= 1")
        check_field(self.lr > 0, n, "lr", self.lr, "must be > 0")
        check_field(0 <= self.min_lr_ratio <= 1, n, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        check_field(self.warmup_steps >= 0, n, "warmup_steps", self.warmup_steps, "must be >= 0")
        check_field(self.weight_decay >= 0, n, "weight_decay", self.weight_decay, "must be >= 0")
        check_field(self.grad_clip >= 0, n, "grad_clip", self.grad_clip, "must be >= 0")
        check_field(self.l1_weight >= 0, n, "l1_weight", self.l1_weight, "must be >= 0")
        check_field(self.summary_levels >= 2, n, "summary_levels", self.summary_levels, "must be >= 2")
        check_field(
            self.summary_min_positives >= 1,
            n,
            "summary_min_positives",
            self.summary_min_positives,
            "must be >= 1",
        )
        check_field(self.summary_weight >= 0, n, "summary_weight", self.summary_weight, "must be >= 0")
        check_field(self.summary_hidden >= 1, n, "summary_hidden", self.summary_hidden, "must be >= 1")
        check_field(self.eval_every >= 1, n, "eval_every", self.eval_every, "must be >= 1")
        check_field(self.log_every >= 1, n, "log_every", self.log_every, "must be >= 1")
        check_field(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            n,
            "device",
            self.device,
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
        )
        check_field(self.num_threads >= 0, n, "num_threads", self.num_threads, "must be >= 0")
        pre = preset(self.preset)[0]
        check_field(
            self.encoder is None or self.encoder.n_samples == pre.n_samples,
            n,
            "encoder.n_samples",
            self.encoder and self.encoder.n_samples,
            f"must be the preset's {pre.n_samples} samples",
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerTrainConfig:
        """Partial ``encoder``/``fsq`` objects are completed from the preset's; the flat architecture
        keys of configs written before the nested ones (``stem_channels``, ``fsq_levels``, ...) are read."""
        if not isinstance(data, dict):
            return super().from_dict(data)  # refused there, as every config refuses a non-dict
        data = dict(data)
        flat = {k: v for k in _FLAT_ENCODER_KEYS if (v := data.pop(k, None)) is not None}
        levels = data.pop("fsq_levels", None)
        # a non-object "encoder"/"fsq" is left for ConfigMixin.from_dict to refuse
        if flat and isinstance(data.get("encoder") or {}, dict):
            data["encoder"] = {**flat, **(data.get("encoder") or {})}
        if levels is not None and isinstance(data.get("fsq") or {}, dict):
            data["fsq"] = {"levels": levels, **(data.get("fsq") or {})}
        name = data.get("preset", cls.preset)
        if isinstance(name, str) and name in PRESETS:  # a bad preset is reported by from_dict/__post_init__
            _, enc, fsq = PRESETS[name]
            for key, base in (("encoder", enc), ("fsq", fsq)):
                if isinstance(data.get(key), dict):
                    data[key] = {**base.to_dict(), **data[key]}
        return super().from_dict(data)

    def model_configs(self) -> tuple[PreprocessConfig, EncoderConfig, FSQConfig]:
        """The preprocessing of the preset and the encoder and FSQ configs this run trains."""
        pre, enc, fsq = preset(self.preset)
        return pre, self.encoder or enc, self.fsq or fsq


_FLAT_ENCODER_KEYS = ("stem_channels", "stage_channels", "fused_channels", "groups")


@dataclasses.dataclass(frozen=True)
class LlmStageConfig(ConfigMixin):
    """What both LLM stages (pretrain, instruct) need: data, LoRA, optimiser and schedule, device."""

    data_dir: str = "data"  # shared data root (holding ptbxl/ and ecgqa/) or the ptbxl folder itself
    # also the records of ptbxl_full/ beside ptbxl/ when the data root has it (diagecg.datasets.ptbxl)
    ptbxl_full: bool = True
    out_dir: str = "runs/llm"  # LLM checkpoint + run summary
    init_dir: str | None = None  # REQUIRED: the previous stage's output folder
    method: Literal["full", "lora"] = "lora"  # "lora": LoRA on attention/MLP (+ trainable ECG token rows)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | None = None  # None = LORA_TARGETS[model_type]
    train_folds: tuple[int, ...] = TRAIN_FOLDS
    valid_folds: tuple[int, ...] = VALID_FOLDS
    max_train_records: int | None = None  # seeded subset; None = all
    steps: int = 1000  # total optimisation steps (sets the lr schedule)
    stop_at_step: int | None = None  # end this run early (resume later)
    batch_size: int = 16  # rows per optimisation step and process
    grad_accum: int = 1  # micro-batches per step (each of batch_size rows)
    lr: float | None = None  # None = 1e-3 (demo model), 2e-4 (LoRA), 2e-5 (full fine-tune of a real base)
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 30
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    eval_every: int = 200  # also the checkpoint interval
    eval_examples: int = 256  # fixed validation examples
    log_every: int = 10
    seed: int = 0
    resume: bool = False  # continue the checkpoint in out_dir
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True  # bf16 mixed precision on CUDA (ignored on CPU)
    load_in_4bit: bool = False  # QLoRA: 4-bit NF4 base via bitsandbytes (CUDA only, method lora)
    gradient_checkpointing: bool = False
    max_new_tokens: int = 64  # stored in the checkpoint's GenerationConfig
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    progress: bool = True

    def __post_init__(self) -> None:
        n = type(self).__name__
        check_field(self.method in ("full", "lora"), n, "method", self.method, "'full' or 'lora'")
        check_field(
            self.lora_r >= 1 and self.lora_alpha > 0 and 0 <= self.lora_dropout < 1,
            n,
            "lora_r",
            self.lora_r,
            "lora_r >= 1, lora_alpha > 0, lora_dropout in [0, 1)",
        )
        _check_folds(self, n, "valid_folds")
        check_field(
            self.max_train_records is None or self.max_train_records >= 1,
            n,
            "max_train_records",
            self.max_train_records,
            "None or >= 1",
        )
        check_field(self.steps >= 1, n, "steps", self.steps, "must be >= 1")
        check_field(
            self.stop_at_step is None or 1 <= self.stop_at_step <= self.steps,
            n,
            "stop_at_step",
            self.stop_at_step,
            f"None or in [1, steps={self.steps}]",
        )
        for name in (
            "batch_size",
            "grad_accum",
            "eval_every",
            "eval_examples",
            "log_every",
            "max_new_tokens",
        ):
            check_field(getattr(self, name) >= 1, n, name, getattr(self, name), "must be >= 1")
        check_field(self.lr is None or self.lr > 0, n, "lr", self.lr, "None or > 0")
        check_field(0 <= self.min_lr_ratio <= 1, n, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        check_field(self.warmup_steps >= 0, n, "warmup_steps", self.warmup_steps, "must be >= 0")
        check_field(self.weight_decay >= 0, n, "weight_decay", self.weight_decay, "must be >= 0")
        check_field(self.grad_clip >= 0, n, "grad_clip", self.grad_clip, "must be >= 0")
        check_field(
            self.device in ("auto", "cpu", "cuda"), n, "device", self.device, "'auto', 'cpu' or 'cuda'"
        )
        check_field(
            not (self.load_in_4bit and self.method != "lora"),
            n,
            "load_in_4bit",
            self.load_in_4bit,
            "needs method='lora' (a 4-bit base cannot be fully fine-tuned)",
        )
        check_field(self.num_threads >= 0, n, "num_threads", self.num_threads, "must be >= 0")


@dataclasses.dataclass(frozen=True)
class PretrainConfig(LlmStageConfig):
    """Stage 2: vocabulary extension + ECG-token forecasting."""

    out_dir: str = "runs/pretrain"
    init_dir: str | None = None  # REQUIRED: the stage-1 output folder (`diagecg train tokenizer --out`)
    method: Literal["full", "lora"] = "full"
    steps: int = 2000
    warmup_steps: int = 50
    weight_decay: float = 0.01
    base_model: str | None = None  # local HF causal LM folder (llama/qwen2/mistral); None = tiny demo model
    context_fractions: tuple[float, ...] = (0.5, 0.5, 0.75)  # forecasting scales, paired with ...
    target_fractions: tuple[float, ...] = (0.125, 0.25, 0.25)  # ... these (fractions of the record's frames)
    text_ratio: float | None = None  # share of text-LM rows; None = 0.3 for the demo model, 0 for a real base
    demo_vocab_size: int = 3000  # BPE size of the demo model's tokenizer
    max_position: int = 512  # demo model context length (tokens)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = "PretrainConfig"
        check_field(
            len(self.context_fractions) == len(self.target_fractions) >= 1,
            n,
            "target_fractions",
            self.target_fractions,
            f"one per context fraction ({len(self.context_fractions)})",
        )
        for c, t in zip(self.context_fractions, self.target_fractions, strict=False):
            check_field(
                c > 0 and t > 0 and c + t <= 1,
                n,
                "context_fractions",
                self.context_fractions,
                f"pairs (c, t) with c, t > 0 and c + t <= 1 (got ({c}, {t}))",
            )
        check_field(
            self.text_ratio is None or 0 <= self.text_ratio < 1,
            n,
            "text_ratio",
            self.text_ratio,
            "None or in [0, 1)",
        )
        check_field(self.demo_vocab_size >= 300, n, "demo_vocab_size", self.demo_vocab_size, "must be >= 300")
        check_field(self.max_position >= 128, n, "max_position", self.max_position, "must be >= 128")


@dataclasses.dataclass(frozen=True)
class SFTConfig(LlmStageConfig):
    """Stage 3: LoRA instruction tuning on ECG question answering and report generation. The model
    comes from ``init_dir`` (the pretrain checkpoint)."""

    out_dir: str = "runs/instruct"
    init_dir: str | None = None  # REQUIRED: the pretrain output folder (`diagecg train pretrain --out`)
    train_ecg_embeddings: bool = False  # new LoRA adapter: also train the ECG token rows
    tasks: tuple[str, ...] = TASKS  # "qa" and/or "report"
    report_ratio: float = 0.25  # share of report rows when both tasks are on
    n_verify: int = 2  # generated questions per record and round (ecgqa.QuestionGenConfig)
    n_choose: int = 1
    n_query: int = 1
    question_rounds: int = 2  # generation rounds with different seeds: more distinct questions per record
    include_ecgqa: bool = True  # add ECG-QA's released single-ECG questions on the training records
    # class-balanced verify questions ("Does this ECG show symptoms of X?"), one pool per finding and
    # answer, drawn finding first, then present/absent with equal odds
    finding_verify_ratio: float = 0.0  # share of the QA rows drawn from these pools; 0 = off
    # share of the other QA rows asked about records without statement labels (most of ptbxl_full: only
    # superclass and normal-ECG questions); None = drawn from one pool with the rest (about 60% of it)
    unlabelled_qa_share: float | None = 0.3
    finding_min_positives: int = 8  # a statement is asked about when this many training records show it
    wording: Literal["template", "mixed"] = "mixed"  # "paraphrase" is held out for evaluation
    eval_generate: int = 32  # validation questions answered greedily at the end (exact match); 0 = off

    def __post_init__(self) -> None:
        super().__post_init__()
        n = "SFTConfig"
        distinct = len(set(self.tasks)) == len(self.tasks)
        check_field(
            len(self.tasks) >= 1 and set(self.tasks) <= set(TASKS) and distinct,
            n,
            "tasks",
            self.tasks,
            f"distinct values from {TASKS}",
        )
        check_field(0 <= self.report_ratio < 1, n, "report_ratio", self.report_ratio, "must be in [0, 1)")
        for name in ("n_verify", "n_choose", "n_query"):
            check_field(getattr(self, name) >= 0, n, name, getattr(self, name), "must be >= 0")
        check_field(self.question_rounds >= 1, n, "question_rounds", self.question_rounds, "must be >= 1")
        check_field(
            self.wording in ("template", "mixed"),
            n,
            "wording",
            self.wording,
            "'template' or 'mixed' ('paraphrase' is held out for evaluation)",
        )
        check_field(
            0 <= self.finding_verify_ratio <= 1,
            n,
            "finding_verify_ratio",
            self.finding_verify_ratio,
            "must be in [0, 1]",
        )
        check_field(
            self.finding_min_positives >= 1,
            n,
            "finding_min_positives",
            self.finding_min_positives,
            "must be >= 1",
        )
        share = self.unlabelled_qa_share
        check_field(share is None or 0 <= share <= 1, n, "unlabelled_qa_share", share, "None or in [0, 1]")
        check_field(self.eval_generate >= 0, n, "eval_generate", self.eval_generate, "must be >= 0")
