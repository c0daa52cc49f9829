"""Stage 3: instruction tuning on ECG question answering and report generation (LoRA by default).

DiagECG (arXiv 2508.15338) fine-tunes the ECG-token LLM with LoRA on ECG-QA questions (Oh et al. 2023,
arXiv 2306.15681) and on report generation, with the patient's tabular features in a structured prompt
(``diagecg.prompts``). Questions are generated from the PTB-XL labels of folds 1-8 with ECG-QA's
templates (``ecgqa.generate_questions``; ``question_rounds`` seeds, ``"mixed"`` wording: the template and
its training paraphrases, never the held-out ones) plus ECG-QA's released single-ECG questions on the
same records; reports are the English SCP-statement renderings (``reports.report_text``). With
``finding_verify_ratio`` > 0, that share of the QA rows are class-balanced verify questions ("Does this ECG
show symptoms of X?" for every superclass and frequent statement): a finding is drawn uniformly, then
present or absent with equal odds, so the answer can only come from the ECG. The loss is on the answer
and its eos only. Fold 9 gives the validation loss (and, at the end, greedy answers to a few
validation questions); fold 10 is never touched.

    diagecg train instruct --data shared/data --init runs/pretrain --out runs/instruct --set steps=1000

The starting point is the pretrain checkpoint (``--init``):

* pretrain ``full`` + ``method=lora`` (default): a new LoRA adapter (attention + MLP) on the pretrained
  model, whose folder becomes the adapter's base (copied when small, else referenced);
* pretrain ``lora`` + ``method=lora``: the pretrain adapter keeps training (its ECG token rows too), on
  the same original base; this is the QLoRA path (``--load-in-4bit``) for large bases;
* ``method=full``: every weight trains (the pretrain adapter, if any, is merged first).

:func:`generate_answer` is the greedy decoder evaluation uses on a trained checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from diagecg.answers import normalize_answer
from diagecg.config import GenerationConfig, VocabConfig
from diagecg.datasets import DataRoots, resolve_data_roots
from diagecg.datasets.ecgqa import (
    QuestionGenConfig,
    finding_names,
    finding_questions,
    finding_text,
    load_answer_vocab,
    load_ecgqa_samples,
)
from diagecg.datasets.ptbxl import PtbxlDataset, frequent_findings
from diagecg.datasets.reports import load_scp_table
from diagecg.errors import DiagEcgError
from diagecg.nn.generation import decoding_policy, greedy_generate
from diagecg.nn.llm_checkpoint import (
    BaseModelRef,
    LlmCheckpointPaths,
    LlmMeta,
    StageRecord,
    load_llm_checkpoint,
    read_llm_meta,
)
from diagecg.prompts import PromptConfig, encode_prompt
from diagecg.training.configs import TASKS, SFTConfig
from diagecg.training.ecg_data import source_fs_hz
from diagecg.training.extend_vocab import init_summary_embeddings
from diagecg.training.llm_data import (
    Example,
    SftItem,
    draw_examples,
    encode_sft_items,
    generate_qa_items,
    load_or_encode_tokens,
    qa_items,
    report_items,
    split_encoded_ids,
)
from diagecg.training.llm_model import (
    base_dtype,
    evaluate_examples,
    stage1_configs,
    stage1_summary,
    wrap_lora,
    write_summary,
)
from diagecg.training.llm_trainer import LlmTrainer, start_run
from diagecg.types import PatientInfo

logger = logging.getLogger(__name__)

N_GENERATE_EXAMPLES = 5  # generated answers/reports quoted in the run summary


# --- greedy decoding -------------------------------------------------------------------------


@torch.no_grad()
def generate_answer(
    model: Any,
    text_tokenizer: Tokenizer,
    meta: LlmMeta,
    ecg_indices: Sequence[int],
    question: str,
    patient: PatientInfo,
    max_new_tokens: int | None = None,
) -> str:
    """Greedy answer of a checkpoint to one question about one record.

    The prompt is ``encode_prompt`` with the checkpoint's own template and vocabulary; decoding follows
    the runtime's policy (``diagecg.nn.generation.decoding_policy``: ECG ids, bos, pad never generated;
    stop at the vocabulary's eos or the model's other eos ids).

    Args:
        model: the LLM (plain or peft), in eval mode.
        text_tokenizer: the checkpoint's base text tokenizer (``text_tokenizer.json``): encodes the text
            pieces and decodes the answer, as the runtime does.
        meta: the checkpoint metadata.
        ecg_indices: the record's FSQ indices (frames,).
        question: the question (or ``meta.prompt.report_question``).
        patient: patient features for the prompt.
        max_new_tokens: None = ``meta.generation.max_new_tokens``; cut to the model's context.

    Returns:
        The decoded answer, stripped.
    """
    v = meta.vocab
    prompt = encode_prompt(
        meta.prompt,
        v,
        lambda t: text_tokenizer.encode(t, add_special_tokens=False).ids,
        question=question,
        patient=patient,
        ecg_indices=list(ecg_indices),
    )
    budget = max_new_tokens or meta.generation.max_new_tokens
    context = int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 0)
    if context:
        budget = min(budget, context - len(prompt))
    if budget < 1:
        raise DiagEcgError(
            f"the prompt has {len(prompt)} tokens, no room to answer in a context of {context}"
        )
    policy = decoding_policy(v, model, text_tokenizer)  # the runtime's stop and banned ids
    pad_id = v.pad_id if v.pad_id is not None else min(policy.stop_ids)
    (out,) = greedy_generate(
        model,
        [prompt],
        pad_id=pad_id,
        stop_ids=policy.stop_ids,
        max_new_tokens=budget,
        batch_size=1,
        banned_ids=sorted(policy.banned_ids),
    )
    return text_tokenizer.decode(out, skip_special_tokens=True).strip()


# --- main ------------------------------------------------------------------------------------


def _absolute_base(ref: BaseModelRef, ckpt_dir: Path) -> BaseModelRef:
    """A base reference usable from another folder (a copied base becomes an absolute path)."""
    if ref.copied:
        return dataclasses.replace(ref, path=str((ckpt_dir / ref.path).resolve()), copied=False)
    return ref


class BalancedPool:
    """Examples grouped by (finding, present); drawn finding first, then present/absent with equal odds
    (class-balanced question sampling: rare findings are asked as often as common ones, and each
    half yes, half no, so the answer cannot be guessed from the question)."""

    def __init__(self, examples: Sequence[Example], keys: Sequence[tuple[str, bool]]) -> None:
        self.groups: dict[str, dict[bool, list[Example]]] = {}
        for ex, (finding, present) in zip(examples, keys, strict=True):
            self.groups.setdefault(finding, {}).setdefault(present, []).append(ex)
        self.findings = sorted(self.groups)

    def draw(self, n: int, rng: random.Random) -> list[Example]:
        out = []
        for _ in range(n):
            by_class = self.groups[rng.choice(self.findings)]
            pool = by_class[rng.choice(sorted(by_class))]
            out.append(pool[rng.randrange(len(pool))])
        return out


def _pools(items: Sequence[SftItem], examples: Sequence[Example]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {t: [] for t in TASKS}
    for item, ex in zip(items, examples, strict=True):
        out[item.task].append(ex)
    return out


@dataclass
class InstructModel:
    """The LLM to tune, its tokenizers, the base the checkpoint records and the pretrain checkpoint's
    files (the ECG tokenizer folder among them)."""

    model: Any
    hf_tok: Any
    text_tok: Tokenizer
    base_ref: BaseModelRef
    paths: LlmCheckpointPaths
    max_len: int  # the model's context: longer instructions are dropped


@dataclass
class Records:
    """The records of a run: their FSQ indices, the fold split, and the tables questions come from."""

    roots: DataRoots
    ptbxl: PtbxlDataset
    tokens: dict[int, np.ndarray]  # FSQ indices (frames,) by ecg_id
    train_ids: list[int]
    valid_ids: list[int]
    scp_table: Any
    answer_vocab: Any
    patients: dict[int, PatientInfo]


@dataclass
class Instructions:
    """The encoded instructions: the training pools by task, the class-balanced finding pool, the
    questions about records without statement labels, and the validation sets.

    ``valid_kept`` are the validation items that fit the context (the greedy answers ask them).
    """

    pools: dict[str, list[Example]]
    valid_pools: dict[str, list[Example]]
    valid_kept: list[SftItem]
    unlabelled_qa: list[Example]
    balanced: BalancedPool | None
    n_finding: int
    n_long: int
    valid_sets: dict[str, list[Example]] = dataclasses.field(default_factory=dict)
    report_ratio: float = 0.0


def check_inputs(cfg: SFTConfig) -> tuple[Path, Path]:
    """The pretrain folder (absolute) and the output folder.

    Raises:
        ValueError: no ``init_dir``.
    """
    if cfg.init_dir is None:
        raise ValueError(
            "SFTConfig.init_dir is required: the --out folder of `diagecg train pretrain` (pass --init)"
        )
    return Path(cfg.init_dir).resolve(), Path(cfg.out_dir)


def build_model(
    cfg: SFTConfig,
    init_dir: Path,
    out_dir: Path,
    pre_meta: LlmMeta,
    device: Any,
    qkw: dict[str, Any],
    resuming: bool,
) -> InstructModel:
    """The model to tune: the resumed checkpoint; the pretrain LoRA adapter, kept training; or the
    pretrain model (merged), its summary-token rows started from their findings' words, in a new LoRA
    adapter or trained whole.

    Raises:
        ValueError: a resumed checkpoint was trained with another ``method``.
    """
    dtype = base_dtype(device, cfg.method)
    if resuming:
        model, hf_tok, meta, paths = load_llm_checkpoint(out_dir, trainable=True, dtype=dtype, **qkw)
        if meta.method != cfg.method:
            raise ValueError(f"resume: {out_dir} was trained with method={meta.method!r}, not {cfg.method!r}")
        base_ref = meta.base_model
    elif pre_meta.method == "lora" and cfg.method == "lora":  # keep training the pretrain adapter
        model, hf_tok, _, paths = load_llm_checkpoint(init_dir, trainable=True, dtype=dtype, **qkw)
        base_ref = _absolute_base(pre_meta.base_model, init_dir)
        logger.info(
            "instruct: continuing the pretrain LoRA adapter of %s (lora_r etc. come from it)", init_dir
        )
    else:
        model, hf_tok, _, paths = load_llm_checkpoint(init_dir, merge=True, dtype=dtype, **qkw)
        base_ref = BaseModelRef(
            path=str(paths.model_dir) if paths.model_dir else str(init_dir),
            kind="hf" if paths.model_dir else "llm_checkpoint",
            name=f"pretrain checkpoint {init_dir} ({pre_meta.base_model.name})",
            model_type=pre_meta.base_model.model_type,
            demo=pre_meta.base_model.demo,
        )
        ecg_summary = stage1_summary(paths.ecg_tokenizer_dir)
        if ecg_summary.enabled and (cfg.method == "full" or cfg.train_ecg_embeddings):
            # the summary tokens never occur in pretraining: start them from their findings' words
            scp = load_scp_table(resolve_data_roots(cfg.data_dir).ptbxl)
            text = Tokenizer.from_file(str(paths.text_tokenizer))
            frame_codes = stage1_configs(paths.ecg_tokenizer_dir)[2].codebook_size
            init_summary_embeddings(
                model,
                pre_meta.vocab,
                frame_codes,
                ecg_summary.levels,
                [finding_text(c, scp) for c in ecg_summary.findings],
                lambda t: text.encode(t, add_special_tokens=False).ids,
                seed=cfg.seed,
            )
        if cfg.method == "lora":
            v = pre_meta.vocab
            model = wrap_lora(
                model,
                r=cfg.lora_r,
                alpha=cfg.lora_alpha,
                dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules,
                trainable_token_ids=range(v.offset, v.offset + v.n_codes + 2)
                if cfg.train_ecg_embeddings
                else (),
                quantized=bool(qkw),
                gradient_checkpointing=cfg.gradient_checkpointing,
            )
        else:
            model.train()
            if cfg.gradient_checkpointing:
                model.gradient_checkpointing_enable()
    vocab = pre_meta.vocab
    assert vocab.pad_id is not None and vocab.eos_id is not None, (
        "the pretrain vocabulary has pad and eos ids"
    )
    text_tok = Tokenizer.from_file(str(paths.text_tokenizer))
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or pre_meta.generation.n_ctx)
    return InstructModel(model, hf_tok, text_tok, base_ref, paths, max_len)


def load_records(cfg: SFTConfig, accelerator: Any, ecg_tokenizer_dir: Path, out_dir: Path) -> Records:
    """The FSQ indices of every record (the token cache, written once by the main process), the
    training and validation ids, and the SCP table and answer vocabulary questions are built from."""
    roots = resolve_data_roots(cfg.data_dir)
    ptbxl = PtbxlDataset.from_data_dir(cfg.data_dir, full=cfg.ptbxl_full)
    with accelerator.main_process_first():  # a missing token cache is written once, then read
        tokens = load_or_encode_tokens(
            ecg_tokenizer_dir, cfg.data_dir, out_dir, cfg.progress, full=cfg.ptbxl_full
        )
    fs_src = source_fs_hz(stage1_configs(ecg_tokenizer_dir)[0].fs_hz)
    train_ids, valid_ids = split_encoded_ids(
        ptbxl, tokens, fs_src, cfg.train_folds, cfg.valid_folds, cfg.max_train_records, cfg.seed
    )
    scp_table = load_scp_table(roots.ptbxl)
    answer_vocab = load_answer_vocab(roots.ecgqa)
    patients = {i: ptbxl.entries[i].patient for i in (*train_ids, *valid_ids)}
    return Records(roots, ptbxl, tokens, train_ids, valid_ids, scp_table, answer_vocab, patients)


def instruction_items(
    cfg: SFTConfig, records: Records, prompt: PromptConfig
) -> tuple[list[SftItem], list[SftItem]]:
    """The training and validation instructions: generated and (training) ECG-QA questions, reports.

    Returns:
        (training items, validation items).
    """
    ptbxl, scp_table, answer_vocab = records.ptbxl, records.scp_table, records.answer_vocab
    qcfg = QuestionGenConfig(n_verify=cfg.n_verify, n_choose=cfg.n_choose, n_query=cfg.n_query)
    train_items: list[SftItem] = []
    valid_items: list[SftItem] = []
    if "qa" in cfg.tasks:
        seeds = [cfg.seed * 1000 + r for r in range(cfg.question_rounds)]
        train_items += generate_qa_items(
            ptbxl,
            records.train_ids,
            scp_table,
            answer_vocab,
            seeds=seeds,
            wording=cfg.wording,
            question_config=qcfg,
        )
        if cfg.include_ecgqa:
            train_items += qa_items(load_ecgqa_samples(records.roots.ecgqa, set(records.train_ids)))
        valid_items += generate_qa_items(
            ptbxl,
            records.valid_ids,
            scp_table,
            answer_vocab,
            seeds=[cfg.seed + 7919],
            wording="template",
            question_config=qcfg,
        )
    if "report" in cfg.tasks:
        train_items += report_items(ptbxl, records.train_ids, scp_table, prompt)
        valid_items += report_items(ptbxl, records.valid_ids, scp_table, prompt)
    return train_items, valid_items


def finding_items(cfg: SFTConfig, records: Records) -> tuple[list[SftItem], list[tuple[str, bool]]]:
    """The class-balanced verify questions about every frequent finding (none when they are off).

    Returns:
        (the items, the (finding, present) key of each).
    """
    items: list[SftItem] = []
    keys: list[tuple[str, bool]] = []
    if "qa" in cfg.tasks and cfg.finding_verify_ratio > 0:
        ptbxl, train_ids = records.ptbxl, records.train_ids
        scp_table = records.scp_table
        names = finding_names(
            frequent_findings(ptbxl, train_ids, cfg.finding_min_positives), scp_table, records.answer_vocab
        )
        codes = {name: code for code, name in names.items()}
        for sample in finding_questions(ptbxl, train_ids, names, scp_table, cfg.seed, wording=cfg.wording):
            items.append(qa_items([sample])[0])
            keys.append((codes[sample.attributes[0]], sample.answers != ("no",)))
        logger.info("instruct: %d class-balanced verify questions about %d findings", len(items), len(names))
    return items, keys


def encode_instructions(
    cfg: SFTConfig, records: Records, llm: InstructModel, vocab: VocabConfig, prompt: PromptConfig
) -> Instructions:
    """Encode the instructions (dropping those longer than the context) into the training pools: by
    task, the questions about records without statement labels apart (their own share of the QA rows),
    and the class-balanced finding pool.

    Raises:
        ValueError: no training instructions.
    """
    train_items, valid_items = instruction_items(cfg, records, prompt)
    verify_items, verify_keys = finding_items(cfg, records)

    def encode(items: Sequence[SftItem]) -> tuple[list[Example], list[SftItem], int]:
        return encode_sft_items(
            items, prompt, vocab, encode_text, records.tokens, records.patients, llm.max_len
        )

    def encode_text(text: str) -> list[int]:
        return llm.text_tok.encode(text, add_special_tokens=False).ids

    train_ex, train_kept, n_long = encode(train_items)
    valid_ex, valid_kept, _ = encode(valid_items)
    pools, valid_pools = _pools(train_kept, train_ex), _pools(valid_kept, valid_ex)
    # questions about records without statement labels (superclasses only) get their own share of the rows
    unlabelled_qa: list[Example] = []
    if cfg.unlabelled_qa_share is not None:
        labelled_of = {i: records.ptbxl.entries[i].statements_labelled for i in records.train_ids}
        qa_pairs = [(item, ex) for item, ex in zip(train_kept, train_ex, strict=True) if item.task == "qa"]
        unlabelled_qa = [ex for item, ex in qa_pairs if not labelled_of.get(item.ecg_id, True)]
        if unlabelled_qa and len(unlabelled_qa) < len(qa_pairs):
            pools["qa"] = [ex for item, ex in qa_pairs if labelled_of.get(item.ecg_id, True)]
            logger.info(
                "instruct: %d QA instructions about records without statement labels, drawn for "
                "%.0f%% of the QA rows",
                len(unlabelled_qa),
                100 * cfg.unlabelled_qa_share,
            )
        else:
            unlabelled_qa = []
    finding_ex, finding_kept, _ = encode(verify_items)
    key_of = dict(zip(verify_items, verify_keys, strict=True))  # the kept items only: some may be too long
    balanced = BalancedPool(finding_ex, [key_of[i] for i in finding_kept]) if finding_ex else None
    if not any(pools.values()):
        raise ValueError("no training instructions (check tasks and folds)")
    return Instructions(pools, valid_pools, valid_kept, unlabelled_qa, balanced, len(finding_ex), n_long)


def draw_valid_sets(cfg: SFTConfig, records: Records, data: Instructions) -> None:
    """Draw the seeded validation sets (a quarter as many reports as questions), set the report share of
    the rows, and log the data's sizes."""
    pools, valid_pools = data.pools, data.valid_pools
    rng_valid = random.Random(f"diagecg-sft-valid-{cfg.seed}")
    data.valid_sets = {
        t: rng_valid.sample(
            p, min(len(p), cfg.eval_examples if t == "qa" else max(1, cfg.eval_examples // 4))
        )
        for t, p in valid_pools.items()
        if p
    }
    both = pools["qa"] and pools["report"]
    data.report_ratio = cfg.report_ratio if both else (1.0 if pools["report"] else 0.0)
    logger.info(
        "instruct data: %d QA + %d report instructions from %d records, %d with statement labels (the others "
        "are asked about their superclasses only; valid %d + %d from %d)",
        len(pools["qa"]),
        len(pools["report"]),
        len(records.train_ids),
        len(records.ptbxl.statements_labelled_ids(records.train_ids)),
        len(valid_pools["qa"]),
        len(valid_pools["report"]),
        len(records.valid_ids),
    )


def stage_meta(cfg: SFTConfig, pre_meta: LlmMeta, llm: InstructModel) -> LlmMeta:
    """The checkpoint's metadata: the pretrain vocabulary, prompt and generation limits, the base, and
    the pretrain lineage with this stage appended."""
    meta = LlmMeta(
        stage="instruct",
        method=cfg.method,
        vocab=pre_meta.vocab,
        prompt=pre_meta.prompt,
        generation=dataclasses.replace(pre_meta.generation, max_new_tokens=cfg.max_new_tokens),
        base_model=llm.base_ref,
        preset=pre_meta.preset,
        train_folds=cfg.train_folds,
        valid_folds=cfg.valid_folds,
        lineage=(*pre_meta.lineage, StageRecord("instruct", cfg.train_folds, cfg.valid_folds, cfg.to_dict())),
    )
    assert isinstance(meta.generation, GenerationConfig)
    return meta


def evaluator(
    trainer: LlmTrainer, data: Instructions, pad_id: int, batch_size: int
) -> Callable[[], dict[str, float]]:
    """The evaluation: loss and top-1 accuracy of each task's validation set."""

    def evaluate() -> dict[str, float]:
        out: dict[str, float] = {}
        for task, examples in data.valid_sets.items():
            r = evaluate_examples(trainer.model, examples, pad_id, batch_size, trainer.accelerator.device)
            out[f"{task}_loss"], out[f"{task}_top1"] = r["loss"], r["top1"]
        return out

    return evaluate


def draw_micro_batch(cfg: SFTConfig, data: Instructions, rows: int, rng: random.Random) -> list[Example]:
    """One micro-batch of all processes: ``report_ratio`` of report rows on average, the QA rows split
    into class-balanced finding questions, questions about unlabelled records, and the other questions."""
    pools, balanced = data.pools, data.balanced
    n_report = sum(rng.random() < data.report_ratio for _ in range(rows))
    n_qa = rows - n_report
    n_finding = sum(rng.random() < cfg.finding_verify_ratio for _ in range(n_qa)) if balanced else 0
    examples = balanced.draw(n_finding, rng) if balanced else []
    n_rest = n_qa - n_finding
    if data.unlabelled_qa:
        share = cfg.unlabelled_qa_share or 0.0
        n_unlabelled = sum(rng.random() < share for _ in range(n_rest))
        examples += draw_examples(data.unlabelled_qa, n_unlabelled, rng)
        n_rest -= n_unlabelled
    examples += draw_examples(pools["qa"], n_rest, rng) if pools["qa"] else []
    examples += draw_examples(pools["report"], rows - len(examples), rng)
    return examples


def train(
    cfg: SFTConfig, trainer: LlmTrainer, data: Instructions, evaluate: Callable[[], dict[str, float]]
) -> None:
    """Train to the trainer's last step; evaluate, log and checkpoint every ``eval_every`` steps and at
    the end (a fresh run also evaluates the untrained model).

    Raises:
        DiagEcgError: the loss became NaN/inf.
    """
    trainer.evaluate_start(evaluate)
    trainer.start_loop()
    recent: list[float] = []
    while trainer.step < trainer.last_step:
        rng = trainer.begin_step()
        for _ in range(cfg.grad_accum):
            row_loss, _ = trainer.backward(draw_micro_batch(cfg, data, trainer.rows, rng))
            recent.append(row_loss.mean().item())
        trainer.end_step()
        step = trainer.step
        if step % cfg.log_every == 0:
            trainer.bar.set_postfix(loss=f"{np.mean(recent[-cfg.log_every :]):.3f}")
        if trainer.eval_due():
            k = cfg.eval_every * cfg.grad_accum
            row = trainer.record_eval(evaluate, {"train_loss": float(np.mean(recent[-k:]))})
            last_eval = trainer.last_eval
            assert last_eval is not None
            logger.info(
                "instruct step %d: train loss %.3f, eval %s",
                step,
                row["train_loss"],
                ", ".join(f"{key} {v:.3f}" for key, v in last_eval.items()),
            )
            trainer.checkpoint()
    trainer.finish(evaluate)


def greedy_answers(
    cfg: SFTConfig, trainer: LlmTrainer, llm: InstructModel, records: Records, valid_kept: Sequence[SftItem]
) -> dict[str, Any] | None:
    """A few greedy answers to validation questions and reports (a smoke check, not the evaluation),
    by the main process; None when ``eval_generate`` is 0 or in the other processes."""
    if not (cfg.eval_generate and trainer.accelerator.is_main_process):
        return None
    trainer.model.eval()
    plain = trainer.accelerator.unwrap_model(trainer.model)
    meta = trainer.meta  # as stored
    gen_rng = random.Random(f"diagecg-sft-generate-{cfg.seed}")
    qa = [it for it in valid_kept if it.task == "qa"]
    qa = gen_rng.sample(qa, min(len(qa), cfg.eval_generate))
    reports = [it for it in valid_kept if it.task == "report"][:N_GENERATE_EXAMPLES]
    rows = []
    for it in tqdm([*qa, *reports], desc="greedy answers", disable=not cfg.progress):
        pred = generate_answer(
            plain,
            llm.text_tok,
            meta,
            records.tokens[it.ecg_id].tolist(),
            it.question,
            records.patients[it.ecg_id],
        )
        rows.append(
            {
                "ecg_id": it.ecg_id,
                "task": it.task,
                "question": it.question,
                "reference": it.answer,
                "prediction": pred,
                "correct": normalize_answer(pred) == normalize_answer(it.answer),
            }
        )
    qa_rows = [r for r in rows if r["task"] == "qa"]
    return {
        "n_qa": len(qa_rows),
        "qa_exact_match": (sum(r["correct"] for r in qa_rows) / len(qa_rows)) if qa_rows else None,
        "examples": qa_rows[:N_GENERATE_EXAMPLES] + [r for r in rows if r["task"] == "report"],
    }


def run_summary(
    cfg: SFTConfig,
    init_dir: Path,
    trainer: LlmTrainer,
    pre_meta: LlmMeta,
    llm: InstructModel,
    records: Records,
    data: Instructions,
    generated: dict[str, Any] | None,
    t_start: float,
) -> dict[str, Any]:
    """The run summary: what was tuned from what, on which folds and instructions, the greedy answers
    and the trainer's fields."""
    return {
        "stage": "instruct",
        "preset": pre_meta.preset,
        "out_dir": str(Path(cfg.out_dir)),
        "init_dir": str(init_dir),
        "method": cfg.method,
        "base_model": llm.base_ref.to_dict(),
        "wall_s": time.time() - t_start,
        "train_folds": list(cfg.train_folds),
        "valid_folds": list(cfg.valid_folds),
        "pretrain_train_folds": list(pre_meta.train_folds),
        "n_train_records": len(records.train_ids),
        "n_valid_records": len(records.valid_ids),
        "n_train_instructions": {t: len(p) for t, p in data.pools.items()},
        "n_finding_verify_instructions": data.n_finding,
        "n_dropped_too_long": data.n_long,
        "generated": generated,
        "config": cfg.to_dict(),
        **trainer.summary_fields(),
    }


def main(cfg: SFTConfig) -> dict[str, Any]:
    """Instruction-tune the pretrain checkpoint; write the instruct checkpoint to ``cfg.out_dir``.

    Returns:
        The run summary (also ``run_summary.json``).

    Raises:
        ValueError: no ``init_dir``; ``out_dir`` holds a checkpoint but ``resume`` is off; 4-bit on CPU.
        FileNotFoundError: data or the pretrain checkpoint is missing.
        DiagEcgError: the loss became NaN/inf.
    """
    t_start = time.time()
    init_dir, out_dir = check_inputs(cfg)
    accelerator, qkw, resuming = start_run(cfg, out_dir)
    pre_meta = read_llm_meta(init_dir)
    llm = build_model(cfg, init_dir, out_dir, pre_meta, accelerator.device, qkw, resuming)
    records = load_records(cfg, accelerator, llm.paths.ecg_tokenizer_dir, out_dir)
    data = encode_instructions(cfg, records, llm, pre_meta.vocab, pre_meta.prompt)
    draw_valid_sets(cfg, records, data)
    trainer = LlmTrainer(
        cfg,
        "instruct",
        "instruction tuning",
        accelerator,
        llm.model,
        hf_tok=llm.hf_tok,
        meta=stage_meta(cfg, pre_meta, llm),
        ecg_tokenizer_dir=llm.paths.ecg_tokenizer_dir,
        resuming=resuming,
    )
    evaluate = evaluator(trainer, data, trainer.pad_id, cfg.batch_size)
    train(cfg, trainer, data, evaluate)
    generated = greedy_answers(cfg, trainer, llm, records, data.valid_kept)
    summary = run_summary(cfg, init_dir, trainer, pre_meta, llm, records, data, generated, t_start)
    if accelerator.is_main_process:
        write_summary(out_dir, summary)
    return summary
