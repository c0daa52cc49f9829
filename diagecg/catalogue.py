"""The question catalogue a bundle carries: what its model was trained to answer (torch-free).

The catalogue lists the single-ECG ECG-QA templates the model was trained on: each template's
question type (verify / choose / query), the attribute values it may name, its closed answer options
and example wordings, and the other names its findings go by (synonyms). The export builds it from
the template table (:func:`catalogue_entries`) and writes its JSON form into the manifest
(``questions``); ``diagecg questions`` prints it. Reading a typed question against it is
``diagecg.questions`` (:class:`~diagecg.questions.QuestionCatalogue` is a :class:`Catalogue` that
reads), refusing one ``diagecg.refusals``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from diagecg.finding_names import SITE_WORDS, STAGE_WORDS, SYNONYMS, NameFinder, finding_forms
from diagecg.question_templates import NONE_ANSWER, TEMPLATES, QuestionTemplate, QuestionType, fill_attributes
from diagecg.question_text import KEYWORDS, normalize_question

__all__ = ["Catalogue", "CatalogueEntry", "catalogue_entries"]

_C = TypeVar("_C", bound="Catalogue")


@dataclasses.dataclass(frozen=True)
class CatalogueEntry:
    """One trained question template.

    Attributes:
        template_id: the ECG-QA template id.
        question_type: verify, choose or query (a str given is read as a :class:`QuestionType`).
        group: what the template is about (``code``, ``norm``, ``superclass``, ``dx_inc``,
            ``dx_exc``, ``form``, ``rhythm``, ``abnormal``).
        text: the template sentence; ``${attribute}`` / ``${attribute1}`` / ``${attribute2}`` mark
            where attribute values go.
        attributes: the values the placeholders may take (empty for a template without one).
        options: the closed answer options (for a query: the members an answer set may have).
        examples: other wordings the model was trained with.
    """

    template_id: int
    question_type: QuestionType
    group: str
    text: str
    attributes: tuple[str, ...]
    options: tuple[str, ...]
    examples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a manifest holds the type as its string; an unknown one raises ValueError naming it
        object.__setattr__(self, "question_type", QuestionType(self.question_type))

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }
        return {**out, "question_type": self.question_type.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CatalogueEntry:
        return cls(
            template_id=int(data["template_id"]),
            question_type=QuestionType(data["question_type"]),
            group=str(data["group"]),
            text=str(data["text"]),
            attributes=tuple(data.get("attributes", ())),
            options=tuple(data["options"]),
            examples=tuple(data.get("examples", ())),
        )

    def render(self, attributes: Sequence[str] = ()) -> str:
        """The template sentence with ``attributes`` filled in (:func:`fill_attributes`)."""
        return fill_attributes(self.text, attributes)


class Catalogue:
    """The templates a bundle answers, their findings and the names those go by.

    Args:
        entries: the trained templates.
        synonyms: attribute name -> other surface forms; the bundle's list is read together with
            :data:`diagecg.finding_names.SYNONYMS`; entries whose attribute is not in the catalogue are
            ignored.

    Attributes:
        entries: template id -> :class:`CatalogueEntry`.
        synonyms: the merged synonyms.
        findings: every attribute value a template may name, sorted.
        names: finds the findings' names, synonyms and misspellings in a normalised question.

    Raises:
        ValueError: duplicate template ids, or a template without options.
    """

    def __init__(
        self, entries: Iterable[CatalogueEntry], synonyms: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.entries = {e.template_id: e for e in entries}
        if not self.entries:
            raise ValueError("a question catalogue needs at least one template")
        for e in self.entries.values():
            if not e.options:
                raise ValueError(f"template {e.template_id} has no answer options")
        merged: dict[str, list[str]] = {k: list(v) for k, v in SYNONYMS.items()}
        for k, v in (synonyms or {}).items():
            merged.setdefault(k, [])
            merged[k].extend(s for s in v if s not in merged[k])
        self.synonyms = {k: tuple(v) for k, v in merged.items()}
        self.findings = tuple(sorted({a for e in self.entries.values() for a in e.attributes}))
        self.names = NameFinder(
            finding_forms(self.findings, self.synonyms),
            normalize_question,
            extra_words=(*KEYWORDS, *SITE_WORDS, *STAGE_WORDS),
        )

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "templates": [e.to_dict() for e in self.entries.values()],
            "synonyms": {k: list(v) for k, v in sorted(self.synonyms.items())},
        }

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        return cls([CatalogueEntry.from_dict(t) for t in data["templates"]], data.get("synonyms"))

    # --- templates by their routing data -------------------------------------------------------

    def routed(self, accept: Callable[[QuestionTemplate], bool]) -> list[CatalogueEntry]:
        """The entries whose template (:data:`TEMPLATES`) ``accept`` takes, by template id."""
        return [e for tid, e in sorted(self.entries.items()) if tid in TEMPLATES and accept(TEMPLATES[tid])]

    def finding_entry(self) -> CatalogueEntry | None:
        """The yes/no template about one named finding ("Does this ECG show symptoms of X?")."""
        return next(iter(self.routed(lambda t: t.one_finding and t.n_attributes == 1)), None)

    def statement_entry(self, statement: str) -> CatalogueEntry | None:
        """The record-level yes/no template about ``statement`` ("Is this a normal ECG?")."""
        return next(iter(self.routed(lambda t: t.statement == statement)), None)

    def record_entry(self, question_type: QuestionType, group: str) -> CatalogueEntry | None:
        """The record-level template of ``question_type`` about ``group``."""
        return next(
            iter(
                self.routed(
                    lambda t: t.record_level and t.question_type is question_type and t.group == group
                )
            ),
            None,
        )

    # --- description ---------------------------------------------------------------------------

    def describe(self) -> list[str]:
        """Human-readable lines: each template, its options and how many attributes it takes."""
        lines = []
        for e in sorted(self.entries.values(), key=lambda e: e.template_id):
            opts = ", ".join(e.options) if len(e.options) <= 6 else f"{len(e.options)} options"
            attr = f" ({len(e.attributes)} attribute values)" if e.attributes else ""
            lines.append(
                f"[{e.template_id}] {e.question_type.removeprefix('single-')}: {e.text}{attr} -> {opts}"
            )
        return lines


def catalogue_entries(answer_vocab: Mapping[str, Sequence[str]]) -> list[CatalogueEntry]:
    """The entries of :data:`TEMPLATES` with ECG-QA's answers per template (for a bundle's catalogue).

    Template 1 ("Does this ECG show symptoms of X?") takes every statement and superclass name the
    choose templates may name; choose templates take their own options; query and record-level
    verify templates take none. Examples are the training paraphrases (the held-out ones stay out).

    Args:
        answer_vocab: ECG-QA template id (as a string) -> allowed answers
            (``answers_for_each_template.csv``, the manifest's ``answer_vocabularies``).

    Raises:
        ValueError: a template has no answer options in ``answer_vocab``.
    """

    def options(tid: int) -> tuple[str, ...]:
        opts = tuple(answer_vocab.get(str(tid), ()))
        if not opts:
            raise ValueError(f"no answer options for ECG-QA template {tid}")
        return opts

    choose = [t for t in TEMPLATES.values() if t.question_type is QuestionType.CHOOSE]
    named = sorted({a for t in choose for a in options(t.template_id)} - {NONE_ANSWER})
    entries = []
    for tid, t in sorted(TEMPLATES.items()):
        if t.n_attributes == 1:
            attributes: tuple[str, ...] = tuple(named)
        elif t.question_type is QuestionType.CHOOSE:
            attributes = tuple(a for a in options(tid) if a != NONE_ANSWER)
        else:
            attributes = ()
        entries.append(
            CatalogueEntry(
                template_id=tid,
                question_type=t.question_type,
                group=t.group,
                text=t.text,
                attributes=attributes,
                options=options(tid),
                examples=t.train_paraphrases,
            )
        )
    return entries
