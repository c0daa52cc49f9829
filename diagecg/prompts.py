"""The structured prompt, defined once and shared by training, evaluation, export and the runtime.

DiagECG (arXiv 2508.15338) puts the ECG tokens and tabular patient features into one instruction
prompt. Our prompt is a single template (``PromptConfig.template``, stored with the model) with
the placeholders ``{age}``, ``{sex}``, ``{height}``, ``{weight}``, ``{ecg}`` and ``{question}``::

    Patient: age 63, sex male, height unknown, weight unknown.
    ECG: <ecg><ecg_0412>...<ecg_0007></ecg>
    Question: Does this ECG show symptoms of atrial fibrillation?
    Answer: no<eos>

Report generation is the same prompt with the fixed question ``PromptConfig.report_question``.

:func:`encode_prompt` turns it into token ids: ``[bos?] + enc(prefix) + [<ecg>] + ids + [</ecg>] +
enc(suffix)``. The text pieces go through ``encode_text``, the *base* text tokenizer (no ECG
tokens: ``tokenizers.Tokenizer.from_file(text_tokenizer.json).encode(text,
add_special_tokens=False).ids``); the ECG ids are inserted directly. Typed text therefore cannot
produce an ECG id, and :func:`encode_prompt` checks it anyway. The answer is written
``answer_prefix + answer`` followed by the eos id (:func:`encode_answer`); training puts its loss
on exactly those ids.

Questions from users go through :func:`sanitize_question` first. Policy: whitespace runs
(newlines included, so a question cannot fake template lines) become one space; an empty
question, control characters, a question longer than ``max_chars`` or any text that looks like an
ECG token (``constants.ECG_TOKEN_PATTERN``, e.g. ``<ecg_0001>``, ``</ecg>``) raise ``InputError``
rather than being silently rewritten.

This module is torch-free: the runtime imports it (conventions: layers).
"""

from __future__ import annotations

import dataclasses
import string
import unicodedata
from collections.abc import Callable, Sequence

from diagecg.config import ConfigMixin, VocabConfig, check_field
from diagecg.errors import ConfigError, InputError
from diagecg.types import PatientInfo
from diagecg.vocab import ecg_ids, ecg_span_ids, find_ecg_token_text

__all__ = [
    "PROMPT_FIELDS",
    "PromptConfig",
    "encode_answer",
    "encode_prompt",
    "patient_fields",
    "render_prompt_text",
    "sanitize_question",
]

PROMPT_FIELDS: tuple[str, ...] = ("age", "sex", "height", "weight", "ecg", "question")

EncodeText = Callable[[str], Sequence[int]]


def _parse_template(template: str) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    """(prefix pieces, suffix pieces) around ``{ecg}``; each piece is (literal, field or None).

    Raises:
        ConfigError: unbalanced braces, unknown field, format spec/conversion, or ``{ecg}``/``{question}``
            not exactly once.
    """
    prefix: list[tuple[str, str | None]] = []
    suffix: list[tuple[str, str | None]] = []
    seen: list[str] = []
    current = prefix
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as e:  # "Single '}' encountered in format string" and the like
        raise ConfigError(f"PromptConfig.template={template!r} is invalid: {e}") from e
    for literal, field, spec, conversion in pieces:
        if field is not None:
            if field not in PROMPT_FIELDS:
                raise ConfigError(
                    f"PromptConfig.template: unknown placeholder {{{field}}}; allowed: "
                    f"{', '.join('{' + f + '}' for f in PROMPT_FIELDS)}"
                )
            if spec or conversion:
                raise ConfigError(
                    f"PromptConfig.template: placeholder {{{field}}} takes no format spec or conversion"
                )
            seen.append(field)
        if field == "ecg":
            current.append((literal, None))
            current = suffix
            continue
        current.append((literal, field))
    for required in ("ecg", "question"):
        if seen.count(required) != 1:
            raise ConfigError(
                f"PromptConfig.template must contain {{{required}}} exactly once "
                f"(found {seen.count(required)})"
            )
    return prefix, suffix


@dataclasses.dataclass(frozen=True)
class PromptConfig(ConfigMixin):
    """The prompt template of an LLM checkpoint (stored in its ``llm_meta.json`` and the bundle manifest)."""

    template: str = (
        "Patient: age {age}, sex {sex}, height {height}, weight {weight}.\n"
        "ECG: {ecg}\nQuestion: {question}\nAnswer:"
    )
    answer_prefix: str = " "  # written before the answer text (BPE: " yes" is one word)
    report_question: str = "Write the report of this ECG."  # the question of the report task
    unknown: str = "unknown"  # written for a missing patient feature
    add_bos: bool = True  # prepend VocabConfig.bos_id when the vocabulary has one

    def __post_init__(self) -> None:
        _parse_template(self.template)  # raises ConfigError naming the problem
        check_field(
            bool(self.report_question.strip()),
            "PromptConfig",
            "report_question",
            self.report_question,
            "must not be empty",
        )
        check_field(
            find_ecg_token_text(self.template.replace("{ecg}", "")) is None,
            "PromptConfig",
            "template",
            self.template,
            "must not contain ECG-token text outside {ecg}",
        )


def _number(value: float | None, unit: str, unknown: str) -> str:
    return unknown if value is None else f"{int(round(value))}{unit}"


def patient_fields(cfg: PromptConfig, patient: PatientInfo) -> dict[str, str]:
    """The patient placeholders as text: ``{"age": "63", "sex": "male", "height": "178 cm", ...}``;
    unknown values (None) are written as ``cfg.unknown`` (``PatientInfo`` has checked the others)."""
    return {
        "age": _number(patient.age_years, "", cfg.unknown),
        "sex": patient.sex or cfg.unknown,
        "height": _number(patient.height_cm, " cm", cfg.unknown),
        "weight": _number(patient.weight_kg, " kg", cfg.unknown),
    }


def render_prompt_text(cfg: PromptConfig, *, question: str, patient: PatientInfo) -> tuple[str, str]:
    """The text before and after the ECG span, with every placeholder filled.

    Values are inserted verbatim (never re-parsed as a template), so braces in a question are safe.
    """
    values = {**patient_fields(cfg, patient), "question": question}
    prefix, suffix = _parse_template(cfg.template)

    def render(pieces: list[tuple[str, str | None]]) -> str:
        return "".join(literal + (values[field] if field else "") for literal, field in pieces)

    return render(prefix), render(suffix)


def encode_prompt(
    cfg: PromptConfig,
    vocab: VocabConfig,
    encode_text: EncodeText,
    *,
    question: str,
    patient: PatientInfo,
    ecg_indices: Sequence[int],
) -> list[int]:
    """Token ids of the full prompt, ending where the answer starts.

    Args:
        cfg: the checkpoint's prompt template.
        vocab: where the ECG ids and bos sit.
        encode_text: text -> ids with the BASE text tokenizer, no special tokens added.
        question: the question (already sanitized when it comes from a user).
        patient: tabular patient features; None fields are written as ``cfg.unknown``.
        ecg_indices: the record's FSQ indices, int (frames,).

    Returns:
        ``[bos?] + enc(prefix) + [start_id] + (offset + k for k in ecg_indices) + [end_id] + enc(suffix)``.

    Raises:
        InputError: the question contains ECG-token text, or ``encode_text`` produced an ECG id.
        ValueError: an FSQ index outside ``[0, vocab.n_codes)``, or no ECG indices.
    """
    found = find_ecg_token_text(question)
    if found is not None:
        raise InputError(
            f"the question contains ECG-token text {found!r}; ECG tokens come only from the record"
        )
    if len(ecg_indices) == 0:
        raise ValueError("encode_prompt: no ECG indices")
    prefix, suffix = render_prompt_text(cfg, question=question, patient=patient)
    text_ids = [[int(i) for i in encode_text(prefix)], [int(i) for i in encode_text(suffix)]]
    ecg = ecg_ids(vocab)
    leaked = [i for piece in text_ids for i in piece if i in ecg]
    if leaked:
        raise InputError(
            f"the text tokenizer produced ECG token ids {leaked[:5]}: encode_text must be "
            f"the base text tokenizer (without ECG tokens)"
        )
    bos = [vocab.bos_id] if cfg.add_bos and vocab.bos_id is not None else []
    return [*bos, *text_ids[0], *ecg_span_ids(ecg_indices, vocab), *text_ids[1]]


def encode_answer(cfg: PromptConfig, encode_text: EncodeText, answer: str, eos_id: int | None) -> list[int]:
    """Token ids of a training answer: ``enc(answer_prefix + answer) + [eos_id]``.

    Raises:
        ValueError: ``eos_id`` is None (an answer must end, or generation never stops).
    """
    if eos_id is None:
        raise ValueError("encode_answer: the vocabulary has no eos_id; answers could never end")
    return [*(int(i) for i in encode_text(cfg.answer_prefix + answer)), int(eos_id)]


def sanitize_question(text: str, max_chars: int) -> str:
    """Check and normalise a user's question (see the module docstring for the policy).

    Args:
        text: the question as typed.
        max_chars: the longest question accepted (``GenerationConfig.max_question_chars``).

    Returns:
        The question with whitespace runs collapsed to single spaces and the ends stripped.

    Raises:
        InputError: not a string, not UTF-8, empty, control characters, longer than ``max_chars``, or
            ECG-token text.
    """
    if not isinstance(text, str):
        raise InputError(f"the question must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (e.g. a Latin-1 terminal)
        raise InputError(
            "the question is not valid UTF-8 text; check the terminal's or file's encoding"
        ) from None
    question = " ".join(text.split())
    if not question:
        raise InputError("the question is empty")
    controls = sorted({f"U+{ord(c):04X}" for c in question if unicodedata.category(c) == "Cc"})
    if controls:
        raise InputError(f"the question contains control characters {controls[:5]}")
    if len(question) > max_chars:
        raise InputError(f"the question has {len(question)} characters; at most {max_chars} are allowed")
    found = find_ecg_token_text(question)
    if found is not None:
        raise InputError(
            f"the question contains ECG-token text {found!r}; ECG tokens come only from "
            f"the record, please rephrase"
        )
    return question
