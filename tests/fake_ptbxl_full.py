"""A fake shared data root with ``ptbxl/`` and ``ptbxl_full/``, written by the tests of ptbxl_full
(tests/datasets/test_ptbxl_full.py) and of the training stages that read it.

A ``ptbxl/`` folder with a few label rows (three with the fixture records' signals) and a ``ptbxl_full/``
folder whose ``unpack.py`` writes a fixture record under each id and logs every call, so a test can
count how often the cache was unpacked. Imported as ``from fake_ptbxl_full import ...`` (``tests/`` is
on ``sys.path``, as for ``builders``).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from diagecg.datasets.ptbxl import SUPERCLASSES

FIXTURE_RECORDS = Path(__file__).resolve().parent / "fixtures" / "records"

PTBXL_ROWS = [  # ecg_id, scp_codes, strat_fold, superclasses; 2, 3 and 8 have the fixture signals
    (2, {"NORM": 80.0, "SR": 0.0}, 1, ["NORM"]),
    (3, {"AFIB": 0.0, "STD_": 100.0}, 2, ["STTC"]),
    (4, {"SR": 0.0, "NORM": 100.0}, 1, ["NORM"]),
    (5, {"SR": 0.0, "LVH": 100.0}, 3, ["HYP"]),
    (8, {"SR": 0.0, "IMI": 100.0}, 10, ["MI"]),
    (2001, {"AFIB": 0.0, "ISC_": 100.0}, 3, ["STTC"]),  # also in ptbxl_full: its signal is there
]
FULL_ROWS = [  # ecg_id, split, strat_fold, superclasses, scp_codes (None: no statement labels)
    (2001, "train", 3, ["STTC"], {"AFIB": 0.0, "ISC_": 100.0}),
    (2002, "train", None, ["CD"], None),  # training fold unknown
    (2003, "test", 10, ["NORM"], None),
    (2004, "val", 9, ["NORM"], {"SR": 0.0, "NORM": 100.0}),
    (2005, "train", 4, ["MI"], {"SR": 0.0, "IMI": 100.0}),
    (2006, "train", None, ["NORM"], None),
]
FAKE_UNPACK = """
import sys
from pathlib import Path
here = Path(__file__).resolve().parent
out = Path(sys.argv[1])
with open(here.parent / "unpack_calls.log", "a") as f:
    f.write("call\\n")
if (here.parent / "FAIL").exists():
    sys.exit("checksum mismatch: the pack is damaged")
hea, dat = (here / "template.hea").read_text(), (here / "template.dat").read_bytes()
for i in map(int, (here / "ids.txt").read_text().split()):
    rel = f"records100/{i // 1000 * 1000:05d}/{i:05d}_lr"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / (rel + ".hea")).write_text(hea.replace("00002_lr", f"{i:05d}_lr"))
    (out / (rel + ".dat")).write_bytes(dat)
"""


def write_fake_data(root: Path) -> Path:
    """A shared data root with ``ptbxl/`` and ``ptbxl_full/`` as described in the module docstring; returns
    ``root``."""
    ptbxl = root / "ptbxl"
    (ptbxl / "records100" / "00000").mkdir(parents=True)
    for i in (2, 3, 8):
        for suffix in (".hea", ".dat"):
            shutil.copy(FIXTURE_RECORDS / f"{i:05d}_lr{suffix}", ptbxl / "records100" / "00000")
    with (ptbxl / "ptbxl_labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "ecg_id",
                "scp_codes",
                "strat_fold",
                "report",
                "age",
                "sex",
                "patient_id",
                "recording_date",
                "label_source",
                "diagnostic_superclass",
            ]
        )
        for i, codes, fold, supers in PTBXL_ROWS:
            w.writerow(
                [i, repr(codes), fold, "sinusrhythmus", 60.0, 1.0, 100 + i, "", "test", json.dumps(supers)]
            )
    full = root / "ptbxl_full"
    full.mkdir()
    with (full / "ptbxl_labels_full.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "ecg_id",
                "split",
                "strat_fold",
                *SUPERCLASSES,
                "diagnostic_superclass",
                "scp_codes",
                "report",
                "age",
                "sex",
                "patient_id",
                "recording_date",
                "label_source",
            ]
        )
        for i, split, fold, supers, codes in FULL_ROWS:
            known = (
                [repr(codes), "sinus rhythm.", 70.0, 0.0, 500 + i]
                if codes is not None
                else ["", "", "", "", ""]
            )  # no statements: no report, age, sex, patient either
            w.writerow(
                [
                    i,
                    split,
                    "" if fold is None else fold,
                    *(int(s in supers) for s in SUPERCLASSES),
                    json.dumps(supers),
                    *known,
                    "",
                    "test",
                ]
            )
    (full / "ids.txt").write_text("\n".join(str(r[0]) for r in FULL_ROWS) + "\n")
    (full / "records100.bin.xz").write_bytes(b"packed")
    (full / "headers100.tar.xz").write_bytes(b"headers")
    (full / "unpack.py").write_text(FAKE_UNPACK)
    shutil.copy(FIXTURE_RECORDS / "00002_lr.hea", full / "template.hea")
    shutil.copy(FIXTURE_RECORDS / "00002_lr.dat", full / "template.dat")
    return root


def n_unpacks(data: Path) -> int:
    """How often the fake ``unpack.py`` of ``data`` has run."""
    log = data / "unpack_calls.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0
