"""The model's reply to one prompt (torch-free; used by the pipeline): a closed question's options scored
side by side and calibrated (:func:`choose`), or decoded text with a query's members kept to its
options (:func:`decode`); and a caller's own options checked and scored (:func:`check_options`,
:func:`score_options`, for ``DiagEcgPipeline.option_probabilities``).

A reply is a dict: ``text``, ``stop_reason``, ``confidence``, ``n_answer_tokens``, ``n_reused_tokens``,
``warnings`` (``Note``), and a closed question's ``option_probabilities`` and ``calibrated``. The
windows' replies are combined by ``runtime.windows``; the consistency rule asks for more of them
(``runtime.answering.StatementReader``).

Kept apart from ``runtime.pipeline`` (which builds the prompts and orders the work): a change to how
options are scored or calibrated, or to how decoding is read, changes this module only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from diagecg.answers import format_answer, normalize_answer
from diagecg.calibration import calibrate_options
from diagecg.config import GenerationConfig
from diagecg.decoding import option_continuations
from diagecg.errors import InferenceError, InputError
from diagecg.notes import Note, W
from diagecg.prompts import PromptConfig
from diagecg.questions import NONE_ANSWER, MatchedQuestion
from diagecg.runtime.llm import LlamaModel

__all__ = ["check_options", "choose", "decode", "score_options"]


def choose(
    llm: LlamaModel,
    prompt: PromptConfig,
    eos_id: int | None,
    calibration: Mapping[str, Mapping[str, Any]],
    prompt_ids: list[int],
    match: MatchedQuestion,
) -> dict[str, Any]:
    """Score a closed question's options; the most probable one is the answer.

    Args:
        llm: the bundle's model.
        prompt: the bundle's prompt config (how an option continues the prompt).
        eos_id: the bundle's end-of-answer id, appended to every option.
        calibration: finding name -> Platt map and threshold (a verify question's finding is calibrated).
        prompt_ids: the prompt's token ids.
        match: the catalogue question whose options are scored.

    Raises:
        InferenceError: the probabilities are not finite after the calibration (a damaged entry).
    """
    option_ids = option_continuations(prompt, llm.encode_text, match.options, eos_id)
    probs, n_reused = llm.score_options(prompt_ids, option_ids)
    best = int(probs.argmax())
    finding = match.finding  # a verify question's about one finding: calibrated per finding
    cal = calibration.get(finding) if finding else None
    if cal is not None and "no" in match.options:
        probs, best = calibrate_options(probs, match.options.index("no"), cal)
    if not np.isfinite(probs).all():  # a damaged calibration entry; never NaN in an answer
        raise InferenceError(
            f"the options' probabilities are not finite after the bundle's calibration "
            f"of {finding!r}: {probs.tolist()}"
        )
    return {
        "text": match.options[best],
        "stop_reason": "options",
        "confidence": float(probs[best]),
        "option_probabilities": {o: float(p) for o, p in zip(match.options, probs, strict=True)},
        "n_answer_tokens": len(option_ids[best]) - 1,
        "n_reused_tokens": n_reused,
        "warnings": [],
        "calibrated": cal is not None,
    }


def decode(
    llm: LlamaModel, generation: GenerationConfig, prompt_ids: list[int], match: MatchedQuestion | None
) -> dict[str, Any]:
    """Greedy (or the bundle's sampling) decoding; a query keeps only its template's options."""
    g = generation
    gen = llm.generate(
        prompt_ids,
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_k=g.top_k,
        top_p=g.top_p,
        repeat_penalty=g.repeat_penalty,
    )
    text, warnings = gen.text, [Note(W.GENERATION, w) for w in gen.warnings]
    if match is not None:  # a query: members outside the template's options are dropped
        members = normalize_answer(text)
        kept = sorted(members & set(match.options))
        if kept != sorted(members):
            dropped = sorted(members - set(match.options))
            warnings.append(
                Note(
                    W.ANSWER_FILTERED,
                    f"dropped answer members that are not options of the question: {dropped}",
                )
            )
            text = format_answer(kept) if kept else NONE_ANSWER
    return {
        "text": text,
        "stop_reason": gen.stop_reason,
        "confidence": float(math.exp(gen.logprob)),
        "n_answer_tokens": len(gen.token_ids),
        "n_reused_tokens": gen.n_reused_tokens,
        "warnings": warnings,
    }


def check_options(options: Sequence[str], check: Callable[[str], str]) -> list[str]:
    """A caller's answer options, each checked by ``check`` (the pipeline's ``check_question``).

    Raises:
        InputError: no options, an option that is not a str, or one that ``check`` refuses.
    """
    if isinstance(options, str) or not options:
        raise InputError("no answer options given: a list of option strings, e.g. ['yes', 'no']")
    if not all(isinstance(o, str) for o in options):
        raise InputError("every answer option must be a str")
    return [_check_option(o, check) for o in options]


def _check_option(option: str, check: Callable[[str], str]) -> str:
    """An answer option checked as a question is (empty text, control characters, ECG-token or special-
    token text are refused)."""
    try:
        return check(option)
    except InputError as e:
        why = str(e).replace("the question", "it")
        raise InputError(f"answer option {option[:60]!r}: {why}") from None


def score_options(
    llm: LlamaModel, prompt: PromptConfig, eos_id: int | None, prompt_ids: list[int], options: Sequence[str]
) -> dict[str, float]:
    """The model's probability of each option after the prompt (whole continuations, normalised over the
    options; ``LlamaModel.option_probabilities``), uncalibrated."""
    option_ids = option_continuations(prompt, llm.encode_text, options, eos_id)
    probs = llm.option_probabilities(prompt_ids, option_ids)
    return {o: float(p) for o, p in zip(options, probs, strict=True)}
