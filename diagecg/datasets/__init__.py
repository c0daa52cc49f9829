"""The shared data, read without torch: PTB-XL records and labels (``ptbxl``), SCP statements and
report texts (``reports``), ECG-QA answer vocabularies, released questions and the question generator
(``ecgqa``), and the cache of unpacked shared data (``cache``).

Training, evaluation, export parity checks and the benchmarks read the data through this package;
the runtime never imports it (``tests/test_import_boundaries.py``). Two helpers serve them all:
:func:`resolve_data_roots` finds the PTB-XL and ECG-QA folders from the shared data root, and
:func:`seeded_subset` draws every seeded record or question subset.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TypeVar

PTBXL_FOLDER = "ptbxl"  # sub-folder of the shared data root
PTBXL_LABELS = "ptbxl_labels.csv"
PTBXL_FULL_FOLDER = "ptbxl_full"  # beside ptbxl/: the rest of PTB-XL, packed (diagecg.datasets.cache)
PTBXL_FULL_LABELS = "ptbxl_labels_full.csv"
ECGQA_FOLDER: tuple[str, ...] = ("ecgqa", "ptbxl")  # beside ptbxl/ under the shared data root

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DataRoots:
    """Where the shared data lives: the PTB-XL folder, and the ECG-QA (PTB-XL version) and the
    ``ptbxl_full`` folders if any."""

    ptbxl: Path
    ecgqa_or_none: Path | None
    ptbxl_full_or_none: Path | None = None

    @property
    def ecgqa(self) -> Path:
        """The ECG-QA folder.

        Raises:
            FileNotFoundError: there is none beside the PTB-XL folder.
        """
        if self.ecgqa_or_none is None:
            raise FileNotFoundError(f"no ECG-QA folder {'/'.join(ECGQA_FOLDER)} beside {self.ptbxl}")
        return self.ecgqa_or_none


def resolve_data_roots(data_dir: str | Path) -> DataRoots:
    """The data folders, given the shared data root (holding ``ptbxl/``, ``ecgqa/ptbxl/`` and
    ``ptbxl_full/``) or the PTB-XL folder itself (the others are then looked for beside it).

    Raises:
        FileNotFoundError: neither ``data_dir`` nor ``data_dir/ptbxl`` holds the PTB-XL labels.
    """
    d = Path(data_dir)
    for ptbxl in (d, d / PTBXL_FOLDER):
        if (ptbxl / PTBXL_LABELS).is_file():
            break
    else:
        raise FileNotFoundError(
            f"no PTB-XL data under {d}: expected {d / PTBXL_FOLDER / PTBXL_LABELS} or {d / PTBXL_LABELS}"
        )
    ecgqa = next(
        (c for c in (d.joinpath(*ECGQA_FOLDER), ptbxl.parent.joinpath(*ECGQA_FOLDER)) if c.is_dir()), None
    )
    full = next(
        (
            c
            for c in (d / PTBXL_FULL_FOLDER, ptbxl.parent / PTBXL_FULL_FOLDER)
            if (c / PTBXL_FULL_LABELS).is_file()
        ),
        None,
    )
    return DataRoots(ptbxl, ecgqa, full)


def seeded_subset(items: Sequence[T], limit: int | None, seed: int, purpose: str = "subset") -> list[T]:
    """``limit`` of ``items`` drawn with a seed, in their original order (all when ``limit`` is None or
    not smaller). ``purpose`` keeps the draws of different uses independent for the same seed."""
    if limit is None or limit >= len(items):
        return list(items)
    chosen = set(random.Random(f"{purpose}-{seed}").sample(range(len(items)), limit))
    return [x for k, x in enumerate(items) if k in chosen]


def stratified_subset(
    items: Sequence[T], strata: Sequence[Hashable], limit: int | None, seed: int, purpose: str = "subset"
) -> list[T]:
    """``limit`` of ``items`` drawn with a seed so that each stratum keeps its share, in their original
    order (all when ``limit`` is None or not smaller).

    Each stratum gets ``floor(limit * share)`` items, and the items left over go to the strata with the
    largest remainders (ties by first appearance), so the subset's composition is as close to the whole
    as ``limit`` allows; the items within a stratum are a seeded random draw.
    """
    if len(strata) != len(items):
        raise ValueError(f"{len(strata)} strata for {len(items)} items")
    if limit is None or limit >= len(items):
        return list(items)
    members: dict[Hashable, list[int]] = {}
    for k, s in enumerate(strata):
        members.setdefault(s, []).append(k)
    exact = {s: limit * len(m) / len(items) for s, m in members.items()}
    quota = {s: int(q) for s, q in exact.items()}
    order = list(members)  # first appearance
    leftover = sorted(order, key=lambda s: (-(exact[s] - quota[s]), order.index(s)))
    for s in leftover[: limit - sum(quota.values())]:
        quota[s] += 1
    rng = random.Random(f"{purpose}-stratified-{seed}")
    chosen = {k for s in order for k in rng.sample(members[s], quota[s])}
    return [x for k, x in enumerate(items) if k in chosen]
