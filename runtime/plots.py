"""``--plot PATH`` of ``diagecg infer`` and ``diagecg report``: each answered record drawn as a printed
ECG (``diagecg.plot``) with its answers and the windows they were read from.

PATH names one file (``.png``, ``.pdf`` or ``.svg``, in a folder that exists) for a single record. For
several records (RECORD arguments that are a folder or an ``@list`` count as several), or when PATH is
an existing folder, it names a folder, created if missing (its parent must exist), that gets one
``<record_id>.png`` per record (``<record_id>-2.png`` ... when two records share an id: the command
says so on stderr, and each JSON line's ``plot`` names its picture). A
``{record_id}`` in the file name of PATH is replaced by the record's id, e.g.
``--plot plots/{record_id}.pdf``. A record asked several questions gets one picture with every
question and answer. The traces are filtered as the bundle's preprocessing filters them (what the
model saw).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from diagecg.config import PreprocessConfig, QualityConfig
from diagecg.features import summary_line
from diagecg.io import read_record
from diagecg.plot import check_output_path, plot_ecg, require_matplotlib
from diagecg.runtime.answer import TASK_REPORT, Answer
from diagecg.types import PatientInfo

logger = logging.getLogger(__name__)

RECORD_ID_FIELD = "{record_id}"
FOLDER_SUFFIX = ".png"  # the files written into a --plot folder


class AnswerPlots:
    """Where the ``--plot`` pictures go, checked before any record is answered.

    Args:
        path: the ``--plot`` value (see the module docstring).
        several: several records are answered (PATH is then a folder unless it holds ``{record_id}``).

    Raises:
        ImportError: matplotlib is not installed (one line naming ``diagecg[plot]``).
        ValueError, FileNotFoundError: a PATH that cannot be written (bad suffix, missing folder,
            a file where a folder is needed).
    """

    def __init__(self, path: str, *, several: bool) -> None:
        require_matplotlib()
        self.pattern = path if RECORD_ID_FIELD in path else None
        to_folder = self.pattern is None and (several or Path(path).is_dir())
        self.folder = Path(path) if to_folder else None
        self.file = Path(path) if self.pattern is None and not to_folder else None
        if self.pattern is not None:
            check_output_path(self.pattern.replace(RECORD_ID_FIELD, "record"))
        elif self.folder is not None:
            if self.folder.exists() and not self.folder.is_dir():
                raise ValueError(
                    f"--plot {self.folder}: several records are drawn into a folder, and this is a file"
                )
            if not self.folder.parent.is_dir():
                raise FileNotFoundError(
                    f"--plot {self.folder}: cannot create the folder, its parent "
                    f"{self.folder.parent} does not exist"
                )
            self.folder.mkdir(exist_ok=True)
        else:
            assert self.file is not None
            check_output_path(self.file)
        self._written: dict[Path, int] = {}
        self.renamed: list[tuple[Path, Path]] = []  # (the first picture, a later record's renamed one)

    def _target(self, record_id: str) -> Path:
        if self.file is not None:
            return self.file
        if self.pattern is not None:
            path = Path(self.pattern.replace(RECORD_ID_FIELD, record_id))
        else:
            assert self.folder is not None
            path = self.folder / f"{record_id}{FOLDER_SUFFIX}"
        n = self._written[path] = self._written.get(path, 0) + 1
        if n == 1:
            return path
        renamed = path.with_name(f"{path.stem}-{n}{path.suffix}")
        self.renamed.append((path, renamed))
        return renamed

    def write(
        self, answers: Sequence[Answer], *, preprocess: PreprocessConfig, quality: QualityConfig
    ) -> Path:
        """Draw the record of ``answers`` (one record's, in question order) with their text.

        Args:
            answers: one record's answers, in question order.
            preprocess: the bundle's preprocessing; its filters are the ones drawn (what the model saw).
            quality: the pipeline's record checks, to read the record again as it was answered.

        Raises:
            RecordError: the record cannot be read again. OSError: the file cannot be written.
        """
        first = answers[0]
        record = read_record(first.record, quality=quality)
        windows = [(float(w["start_s"]), float(w["end_s"])) for w in first.windows]
        path = plot_ecg(
            record,
            check_output_path(self._target(record.record_id)),
            text=answer_text(answers),
            windows=windows or None,
            highpass_hz=preprocess.highpass_hz,
            lowpass_hz=preprocess.lowpass_hz,
            patient=PatientInfo(**first.patient),
        )
        logger.debug("drew %s", path)
        return path


def answer_text(answers: Sequence[Answer]) -> str:
    """The text box of a record's picture: each question (and the catalogue question it was asked as)
    and answer, or the report, with the confidence, and each window's answer when there were several."""
    lines = []
    for ans in answers:
        if ans.task == TASK_REPORT:
            lines.append(f"Report: {ans.answer}")
            if ans.measurements is not None:
                lines.append(summary_line(ans.measurements))
        else:
            lines.append(f"Question: {ans.question}")
            mq = ans.matched_question or {}
            canonical = mq.get("canonical")
            if canonical and canonical.casefold() != ans.question.strip().casefold():
                inverted = ", its answer inverted" if mq.get("polarity") == "negated" else ""
                lines[-1] += f"  (asked as: {canonical}{inverted})"  # the question the model answered
            lines.append(
                "Answer: none given: the question is not one this model was trained to answer"
                if ans.question_supported is False
                else f"Answer: {ans.answer}"
            )
        if ans.confidence is not None:
            lines[-1 if ans.task != TASK_REPORT or ans.measurements is None else -2] += (
                f"  (confidence {ans.confidence:.2f})"
            )
        if len(ans.windows) > 1:
            lines.append(
                "    per window: "
                + "; ".join(f"{w['start_s']:.1f}\u2013{w['end_s']:.1f} s: {w['answer']}" for w in ans.windows)
            )
    return "\n".join(lines)
