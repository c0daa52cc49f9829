"""diagecg.prompts: the one prompt template, its token layout, and the question policy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from diagecg.config import VocabConfig
from diagecg.errors import InputError
from diagecg.prompts import (
    PromptConfig,
    encode_answer,
    encode_prompt,
    patient_fields,
    render_prompt_text,
    sanitize_question,
)
from diagecg.types import PatientInfo

tokenizers = pytest.importorskip("tokenizers")

CORPUS = [
    "Patient: age 63, sex male, height unknown, weight unknown.",
    "ECG: Question: Answer: yes no not sure",
    "Does this ECG show symptoms of atrial fibrillation?",
    "sinus rhythm. normal ecg.",
    "Write the report of this ECG.",
]


@pytest.fixture(scope="module")
def text_tok(tmp_path_factory: pytest.TempPathFactory):
    """A byte-level BPE text tokenizer saved to tokenizer.json and loaded back, as the runtime does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=350,
        special_tokens=["<bos>", "<eos>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    path = Path(tmp_path_factory.mktemp("tok")) / "text_tokenizer.json"
    tok.save(str(path))
    return Tokenizer.from_file(str(path))


@pytest.fixture(scope="module")
def vocab(text_tok) -> VocabConfig:
    n = text_tok.get_vocab_size(with_added_tokens=True)
    return VocabConfig(
        n_codes=16,
        offset=n,
        start_id=n + 16,
        end_id=n + 17,
        vocab_size=n + 18,
        base_vocab_size=n,
        bos_id=text_tok.token_to_id("<bos>"),
        eos_id=text_tok.token_to_id("<eos>"),
    )


def _enc(tok):
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def test_prompt_layout(text_tok, vocab: VocabConfig) -> None:
    cfg = PromptConfig()
    patient = PatientInfo(age_years=63.4, sex="male")
    ids = encode_prompt(
        cfg, vocab, _enc(text_tok), question="Does this ECG show AF?", patient=patient, ecg_indices=[3, 0, 15]
    )
    prefix, suffix = render_prompt_text(cfg, question="Does this ECG show AF?", patient=patient)
    assert prefix == "Patient: age 63, sex male, height unknown, weight unknown.\nECG: "
    assert suffix == "\nQuestion: Does this ECG show AF?\nAnswer:"
    p, s = _enc(text_tok)(prefix), _enc(text_tok)(suffix)
    assert ids == [
        vocab.bos_id,
        *p,
        vocab.start_id,
        vocab.offset + 3,
        vocab.offset,
        vocab.offset + 15,
        vocab.end_id,
        *s,
    ]
    # decoding the text pieces gives the text back (byte-level BPE is lossless)
    assert text_tok.decode(p) == prefix and text_tok.decode(s) == suffix


def test_no_bos_when_vocab_has_none_or_config_says_so(text_tok, vocab: VocabConfig) -> None:
    kw = dict(question="q?", patient=PatientInfo(), ecg_indices=[1])
    with_bos = encode_prompt(PromptConfig(), vocab, _enc(text_tok), **kw)
    no_bos = encode_prompt(PromptConfig(), dataclasses.replace(vocab, bos_id=None), _enc(text_tok), **kw)
    off = encode_prompt(PromptConfig(add_bos=False), vocab, _enc(text_tok), **kw)
    assert with_bos[0] == vocab.bos_id and with_bos[1:] == no_bos == off


def test_typed_ecg_text_never_becomes_an_ecg_id(text_tok, vocab: VocabConfig) -> None:
    # the base text tokenizer has no ECG tokens: typed "<ecg_0001>" is plain text...
    ids = _enc(text_tok)("<ecg_0001> </ecg> <ecg>")
    assert ids and max(ids) < vocab.base_vocab_size
    # ...and encode_prompt refuses ECG-token text in a question outright
    with pytest.raises(InputError, match="ECG-token text"):
        encode_prompt(
            PromptConfig(),
            vocab,
            _enc(text_tok),
            question="is <ecg_0001> bad?",
            patient=PatientInfo(),
            ecg_indices=[1],
        )


def test_a_tokenizer_that_knows_ecg_tokens_is_caught(vocab: VocabConfig) -> None:
    leaky = lambda text: [vocab.offset + 2] if "Answer" in text else [5]  # noqa: E731
    with pytest.raises(InputError, match="encode_text must be"):
        encode_prompt(PromptConfig(), vocab, leaky, question="q?", patient=PatientInfo(), ecg_indices=[1])


def test_bad_indices_are_refused(text_tok, vocab: VocabConfig) -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_prompt(
            PromptConfig(), vocab, _enc(text_tok), question="q?", patient=PatientInfo(), ecg_indices=[16]
        )
    with pytest.raises(ValueError, match="no ECG indices"):
        encode_prompt(
            PromptConfig(), vocab, _enc(text_tok), question="q?", patient=PatientInfo(), ecg_indices=[]
        )


def test_answer_ends_with_eos(text_tok, vocab: VocabConfig) -> None:
    ids = encode_answer(PromptConfig(), _enc(text_tok), "not sure", vocab.eos_id)
    assert ids[-1] == vocab.eos_id and text_tok.decode(ids[:-1]) == " not sure"
    with pytest.raises(ValueError, match="eos_id"):
        encode_answer(PromptConfig(), _enc(text_tok), "yes", None)


@pytest.mark.parametrize(
    "patient, expected",
    [
        (PatientInfo(), ("unknown", "unknown", "unknown", "unknown")),
        (
            PatientInfo(age_years=71.6, sex="female", height_cm=165.2, weight_kg=70.0),
            ("72", "female", "165 cm", "70 kg"),
        ),
        (PatientInfo(age_years=0.0, sex="male"), ("0", "male", "unknown", "unknown")),
    ],
)
def test_patient_fields(patient: PatientInfo, expected: tuple[str, ...]) -> None:
    f = patient_fields(PromptConfig(), patient)
    assert (f["age"], f["sex"], f["height"], f["weight"]) == expected


def test_braces_in_a_question_are_literal() -> None:
    _, suffix = render_prompt_text(
        PromptConfig(), question="what about {age} and {ecg}?", patient=PatientInfo()
    )
    assert "what about {age} and {ecg}?" in suffix


@pytest.mark.parametrize(
    "template, match",
    [
        ("no placeholders", r"\{ecg\} exactly once"),
        ("{ecg} {ecg} {question}", r"\{ecg\} exactly once"),
        ("{ecg} without question", r"\{question\} exactly once"),
        ("{ecg} {question} {name}", "unknown placeholder"),
        ("{ecg} {question:>10}", "format spec"),
        ("<ecg_0001> {ecg} {question}", "ECG-token text"),
    ],
)
def test_bad_templates_are_refused(template: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PromptConfig(template=template)


def test_custom_template_and_roundtrip(tmp_path: Path) -> None:
    cfg = PromptConfig(
        template="{{system}} Q: {question}\n{ecg}\nA ({sex}):", answer_prefix="", add_bos=False
    )
    prefix, suffix = render_prompt_text(cfg, question="hi?", patient=PatientInfo(sex="male"))
    assert (prefix, suffix) == ("{system} Q: hi?\n", "\nA (male):")
    cfg.save(tmp_path / "p.json")
    assert PromptConfig.load(tmp_path / "p.json") == cfg


def test_sanitize_question_normalises_whitespace() -> None:
    assert sanitize_question("  Does this\nECG\tshow   AF?  ", 100) == "Does this ECG show AF?"
    # bytes that were not UTF-8 arrive as lone surrogates (surrogateescape): refused, not a crash later
    with pytest.raises(InputError, match="not valid UTF-8"):
        sanitize_question(b"AF? \xff".decode("utf-8", "surrogateescape"), 100)


@pytest.mark.parametrize(
    "question, match",
    [
        ("Is <ecg_0001> normal?", "ECG"),
        ("Is </ecg> normal?", "ECG"),
        ("<ECG_12>", "ECG"),
        ("x" * 201, "200"),
        ("   \n ", "empty"),
        ("bell\x07 ring", "control"),
    ],
)
def test_sanitize_question_refuses(question: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        sanitize_question(question, 200)


def test_sanitize_question_accepts_the_limit() -> None:
    assert sanitize_question("y" * 200, 200) == "y" * 200
    with pytest.raises(InputError):
        sanitize_question(123, 200)  # type: ignore[arg-type]
