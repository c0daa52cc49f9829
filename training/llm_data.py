"""Training examples of the LLM stages: ECG-token forecasting, text LM, instruction tuning, and batching.

An example is ``(input_ids, labels)``, two equal-length int lists; ``labels`` is -100 where no loss is
taken (Hugging Face causal LMs shift the labels themselves, so ``labels[i]`` is the token at ``i``).

* **Forecasting** (stage 2, DiagECG arXiv 2508.15338): from a record's T FSQ indices take a context
  window of ``round(c*T)`` tokens and the next ``round(t*T)`` tokens as target, at a random offset, for
  each scale ``(c, t)`` of the config (default (1/2, 1/8), (1/2, 1/4), (3/4, 1/4)). Layout
  ``[bos?] <ecg> ctx tgt [</ecg> when the target reaches the record's end]``; loss on the target only.
* **Text LM**: ``[bos?] text <eos>`` with loss on every text token and eos; it teaches the tiny
  from-scratch demo model the language of questions, answers and reports.
* **Instruction tuning** (stage 3): ``encode_prompt(...) + encode_answer(...)``; loss on the answer and
  its eos only. Tasks: ECG-QA questions (answer: ``diagecg.answers.format_answer``) and report generation
  (the fixed ``PromptConfig.report_question``, answer: ``reports.report_text(..., "en")``).

Batches are drawn from ``(seed, step)`` alone, so a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from diagecg.answers import format_answer
from diagecg.config import VocabConfig
from diagecg.constants import CHECKPOINT_WEIGHTS, ECG_TOKEN_CACHE
from diagecg.datasets import seeded_subset
from diagecg.datasets.ecgqa import AnswerVocabulary, QASample, QuestionGenConfig, Wording, generate_questions
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.datasets.reports import ScpStatement, report_text
from diagecg.prompts import PromptConfig, encode_answer, encode_prompt, render_prompt_text
from diagecg.types import I64Array, PatientInfo
from diagecg.vocab import indices_to_ids

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions without loss (transformers' convention)
Example = tuple[list[int], list[int]]  # (input_ids, labels), equal length
EncodeText = Callable[[str], Sequence[int]]


# --- ECG token cache -------------------------------------------------------------------------


# a cache missing more than this share of the records the data has is re-encoded (one written before
# ptbxl_full was used misses most of them; records that fail validation are never in any cache)
_MAX_MISSING_SHARE = 0.01


def load_or_encode_tokens(
    tokenizer_dir: str | Path,
    data_dir: str | Path,
    fallback_dir: str | Path,
    progress: bool = True,
    full: bool = True,
) -> dict[int, I64Array]:
    """FSQ indices of every PTB-XL record, from the stage-1 cache or encoded now.

    The cache (``constants.ECG_TOKEN_CACHE``) is used only when it is newer than the tokenizer's weights
    (a resumed stage 1 makes it stale). It is looked for in ``tokenizer_dir`` then ``fallback_dir``; a new
    one is written to ``tokenizer_dir`` when writable, else to ``fallback_dir``. A cache that lacks more
    than 1% of the records the data has at the tokenizer's rate (``full``: ptbxl_full's too) is
    encoded again.

    Returns:
        ecg_id -> int64 (frames,) indices.
    """
    from diagecg.training.encode_records import encode_ptbxl, load_token_cache

    tok_dir, fallback = Path(tokenizer_dir), Path(fallback_dir)
    weights = tok_dir / CHECKPOINT_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(
            f"{tok_dir} is not a stage-1 checkpoint: {CHECKPOINT_WEIGHTS} not found "
            f"(give the --out folder of `diagecg train tokenizer`)"
        )
    wanted: set[int] | None = None
    for cand in (tok_dir / ECG_TOKEN_CACHE, fallback / ECG_TOKEN_CACHE):
        if cand.is_file() and cand.stat().st_mtime >= weights.stat().st_mtime:
            tokens = load_token_cache(cand)
            if wanted is None:
                ptbxl = PtbxlDataset.from_data_dir(data_dir, full=full)
                wanted = set(ptbxl.ids(None, fs_hz=_cache_fs_hz(tok_dir)))
            missing = len(wanted - tokens.keys())
            if missing <= _MAX_MISSING_SHARE * len(wanted):
                logger.info("ECG tokens from cache %s", cand)
                return tokens
            logger.info(
                "ECG token cache %s lacks %d of the %d records: encoding again", cand, missing, len(wanted)
            )
    target = tok_dir / ECG_TOKEN_CACHE if os.access(tok_dir, os.W_OK) else fallback / ECG_TOKEN_CACHE
    logger.info("encoding PTB-XL records with %s into %s", tok_dir, target)
    return encode_ptbxl(tok_dir, data_dir, out_path=target, progress=progress, full=full)


def _cache_fs_hz(tokenizer_dir: Path) -> int:
    """The PTB-XL release (100 or 500 Hz) a stage-1 checkpoint's records are read at."""
    from diagecg.config import PreprocessConfig
    from diagecg.constants import ManifestKey
    from diagecg.nn.checkpoint import read_configs
    from diagecg.training.ecg_data import source_fs_hz

    return source_fs_hz(PreprocessConfig.from_dict(read_configs(tokenizer_dir)[ManifestKey.PREPROCESS]).fs_hz)


# --- forecasting -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ForecastScale:
    """Context and target length as fractions of the record's T frames."""

    context: float
    target: float

    def lengths(self, n_frames: int) -> tuple[int, int]:
        ctx = max(1, int(round(self.context * n_frames)))
        tgt = max(1, int(round(self.target * n_frames)))
        if ctx + tgt > n_frames:
            raise ValueError(
                f"scale ({self.context}, {self.target}) needs {ctx + tgt} frames, the record has {n_frames}"
            )
        return ctx, tgt


def forecast_example(
    indices: Sequence[int] | I64Array, vocab: VocabConfig, context: int, target: int, offset: int
) -> Example:
    """One forecasting example; loss on the ``target`` tokens after the ``context`` window (+ ``</ecg>``).

    Args:
        indices: the record's FSQ indices (T,).
        vocab: the extended vocabulary.
        context, target: window lengths in frames.
        offset: first frame of the context; ``offset + context + target <= T``.
    """
    n = len(indices)
    assert context >= 1 and target >= 1 and 0 <= offset and offset + context + target <= n, (
        f"window ({offset}, {context}, {target}) does not fit {n} frames"
    )
    head = ([vocab.bos_id] if vocab.bos_id is not None else []) + [vocab.start_id]
    ctx_ids = indices_to_ids(indices[offset : offset + context], vocab)
    tgt_ids = indices_to_ids(indices[offset + context : offset + context + target], vocab)
    if offset + context + target == n:
        tgt_ids.append(vocab.end_id)
    ids = head + ctx_ids + tgt_ids
    labels = [IGNORE_INDEX] * (len(head) + len(ctx_ids)) + tgt_ids
    return ids, labels


def draw_forecast_examples(
    records: Sequence[I64Array],
    vocab: VocabConfig,
    scales: Sequence[ForecastScale],
    n: int,
    rng: random.Random,
) -> list[Example]:
    """``n`` forecasting examples: a random record, a random scale, a random offset each."""
    out = []
    for _ in range(n):
        rec = records[rng.randrange(len(records))]
        ctx, tgt = rng.choice(list(scales)).lengths(len(rec))
        out.append(forecast_example(rec, vocab, ctx, tgt, rng.randint(0, len(rec) - ctx - tgt)))
    return out


# --- text ----------------------------------------------------------------------------------


def text_example(text: str, encode_text: EncodeText, vocab: VocabConfig, max_len: int) -> Example:
    """``[bos?] text <eos>`` cut to ``max_len`` tokens; loss on everything after bos."""
    if vocab.eos_id is None:
        raise ValueError("text_example: the vocabulary has no eos_id")
    head = [vocab.bos_id] if vocab.bos_id is not None else []
    body = [*(int(i) for i in encode_text(text)), vocab.eos_id][: max_len - len(head)]
    return head + body, [IGNORE_INDEX] * len(head) + body


def build_text_corpus(
    ptbxl: PtbxlDataset,
    ecg_ids: Sequence[int],
    scp_table: dict[str, ScpStatement],
    answer_vocab: AnswerVocabulary,
    prompt: PromptConfig,
    seed: int,
) -> list[str]:
    """The project's own texts, for the demo tokenizer and the text LM objective.

    One prompt-formatted question and answer per generated ECG-QA question (``"mixed"`` wording: the
    template and its training paraphrases; never the held-out ones) and per report, with the ECG span
    left empty; every SCP statement description; every ECG-QA answer class.

    Args:
        ptbxl: labels.
        ecg_ids: records to draw questions and reports from (training folds only).
        scp_table: ``reports.load_scp_table``.
        answer_vocab: ``ecgqa.load_answer_vocab``.
        prompt: the prompt template (its words should be in the tokenizer).
        seed: question generation seed.
    """
    samples = generate_questions(
        ptbxl, list(ecg_ids), scp_table, seed, answer_vocab=answer_vocab, wording="mixed"
    )
    corpus: list[str] = []
    for s in samples:
        prefix, suffix = render_prompt_text(
            prompt, question=s.question, patient=ptbxl.entries[s.ecg_id].patient
        )
        corpus.append(prefix + suffix + prompt.answer_prefix + format_answer(s.answers))
    for i in ecg_ids:
        report = report_text(ptbxl.entries[i], scp_table, "en")
        if report:
            prefix, suffix = render_prompt_text(
                prompt, question=prompt.report_question, patient=ptbxl.entries[i].patient
            )
            corpus.append(prefix + suffix + prompt.answer_prefix + report)
    corpus += [s.description for s in scp_table.values()]
    corpus += list(answer_vocab.answers)
    return corpus


# --- instruction tuning --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SftItem:
    """One instruction: a question (or the report question) about a record and its target answer."""

    ecg_id: int
    task: str  # "qa" | "report"
    question: str
    answer: str


def qa_items(samples: Sequence[QASample]) -> list[SftItem]:
    """ECG-QA samples as instructions; the answer set is written with ``format_answer``."""
    return [SftItem(s.ecg_id, "qa", s.question, format_answer(s.answers)) for s in samples]


def report_items(
    ptbxl: PtbxlDataset, ecg_ids: Sequence[int], scp_table: dict[str, ScpStatement], prompt: PromptConfig
) -> list[SftItem]:
    """Report-generation instructions for the records that have at least one statement."""
    out = []
    for i in ecg_ids:
        report = report_text(ptbxl.entries[i], scp_table, "en")
        if report:
            out.append(SftItem(i, "report", prompt.report_question, report))
    return out


def generate_qa_items(
    ptbxl: PtbxlDataset,
    ecg_ids: Sequence[int],
    scp_table: dict[str, ScpStatement],
    answer_vocab: AnswerVocabulary,
    *,
    seeds: Sequence[int],
    wording: Wording,
    question_config: QuestionGenConfig,
) -> list[SftItem]:
    """Generated ECG-QA questions for ``ecg_ids``, one round per seed, duplicates dropped."""
    seen: set[tuple[int, str]] = set()
    out = []
    for seed in seeds:
        for item in qa_items(
            generate_questions(
                ptbxl,
                list(ecg_ids),
                scp_table,
                seed,
                answer_vocab=answer_vocab,
                config=question_config,
                wording=wording,
            )
        ):  # type: ignore[arg-type]
            if (item.ecg_id, item.question) not in seen:
                seen.add((item.ecg_id, item.question))
                out.append(item)
    return out


def sft_example(
    item: SftItem,
    prompt: PromptConfig,
    vocab: VocabConfig,
    encode_text: EncodeText,
    ecg_indices: Sequence[int],
    patient: PatientInfo,
) -> Example:
    """The prompt (no loss) followed by the answer and eos (loss)."""
    p = encode_prompt(
        prompt, vocab, encode_text, question=item.question, patient=patient, ecg_indices=ecg_indices
    )
    a = encode_answer(prompt, encode_text, item.answer, vocab.eos_id)
    return p + a, [IGNORE_INDEX] * len(p) + a


def encode_sft_items(
    items: Sequence[SftItem],
    prompt: PromptConfig,
    vocab: VocabConfig,
    encode_text: EncodeText,
    tokens: dict[int, I64Array],
    patients: dict[int, PatientInfo],
    max_len: int,
) -> tuple[list[Example], list[SftItem], int]:
    """Encode instructions; those longer than ``max_len`` tokens are dropped and counted.

    Returns:
        (examples, the items they come from, number dropped for length).
    """
    examples, kept, too_long = [], [], 0
    for item in items:
        ex = sft_example(
            item, prompt, vocab, encode_text, tokens[item.ecg_id].tolist(), patients[item.ecg_id]
        )
        if len(ex[0]) > max_len:
            too_long += 1
            continue
        examples.append(ex)
        kept.append(item)
    if too_long:
        logger.warning(
            "%d of %d instructions are longer than %d tokens and were left out", too_long, len(items), max_len
        )
    return examples, kept, too_long


# --- batching -------------------------------------------------------------------------------


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad examples into ``input_ids``, ``attention_mask``, ``labels``: int64 (B, L_max)."""
    if not examples:
        raise ValueError("collate: no examples")
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, lab) in enumerate(examples):
        assert len(ids) == len(lab), f"example {row}: {len(ids)} ids but {len(lab)} labels"
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[row, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def step_rng(seed: int, step: int) -> random.Random:
    """The RNG of one optimisation step: batches depend on (seed, step) only, in every process."""
    # the "-0" keeps the string of the former per-process rng of process 0: one-process runs draw the same
    return random.Random(f"diagecg-llm-{seed}-{step}-0")


def draw_examples(pool: Sequence[Example], n: int, rng: random.Random) -> list[Example]:
    """``n`` examples drawn with replacement from ``pool``."""
    return [pool[rng.randrange(len(pool))] for _ in range(n)]


def as_arrays(tokens: dict[int, I64Array], ids: Sequence[int]) -> list[I64Array]:
    """The token arrays of ``ids`` that are in ``tokens``, in order."""
    return [np.asarray(tokens[i], dtype=np.int64) for i in ids if i in tokens]


def split_encoded_ids(
    ptbxl: PtbxlDataset,
    tokens: dict[int, I64Array],
    fs_hz: int,
    train_folds: Sequence[int],
    valid_folds: Sequence[int],
    max_train_records: int | None,
    seed: int,
) -> tuple[list[int], list[int]]:
    """Train/validation ecg_ids of the given folds that have FSQ tokens (train: a seeded subset).

    Raises:
        ValueError: a split has no encoded record.
    """
    all_train = ptbxl.ids(tuple(train_folds), fs_hz=fs_hz)
    all_valid = ptbxl.ids(tuple(valid_folds), fs_hz=fs_hz)
    train_ids = seeded_subset([i for i in all_train if i in tokens], max_train_records, seed)
    valid_ids = [i for i in all_valid if i in tokens]
    n_missing = sum(i not in tokens for i in (*all_train, *all_valid))
    if n_missing:
        logger.warning(
            "%d of %d train/valid records have no ECG tokens (failed validation when encoded)",
            n_missing,
            len(all_train) + len(all_valid),
        )
    if not train_ids or not valid_ids:
        raise ValueError(
            f"no encoded records in train folds {tuple(train_folds)} ({len(train_ids)}) or valid folds "
            f"{tuple(valid_folds)} ({len(valid_ids)})"
        )
    return train_ids, valid_ids
