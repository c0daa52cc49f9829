"""How the plausibility checks (``diagecg.plausibility``) treat every real record the project has.

Each record is read twice, as ``diagecg infer`` reads it: with the checks (the defaults of
``QualityConfig``) and without them (``plausibility=False`` and no dead-lead rule, the checks of before).
A record refused only with the checks is a *new refusal*, counted per check; the warnings each check adds
are counted too. Sources: PTB-XL ``records100`` and ``records500``, the unpacked ``ptbxl_full`` records
(``$DIAGECG_CACHE/ptbxl_full``), ``other_hospitals`` and the PTB record in ``wfdb_sample``, and every
record under ``tests/fixtures``. Usage::

    python bench/plausibility.py --data ../shared/data --out runs/plausibility.json

The counts are in the README (section "Signals that are not an ECG are refused").
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path
from typing import Any

from diagecg.config import QualityConfig
from diagecg.errors import DiagEcgError
from diagecg.formats import find_records
from diagecg.io import read_record
from diagecg.plausibility import CHECKS, note_code

REPO = Path(__file__).resolve().parents[1]
BEFORE = QualityConfig(plausibility=False, constant_run_warn_s=1e9, constant_run_refuse_s=1e9)
AFTER = QualityConfig()


def sources(data: Path, cache: Path) -> dict[str, list[Path]]:
    """Source name -> its records (sorted)."""
    return {
        "ptbxl records100": sorted((data / "ptbxl" / "records100").rglob("*.hea")),
        "ptbxl records500": sorted((data / "ptbxl" / "records500").rglob("*.hea")),
        "ptbxl_full records100": sorted((cache / "ptbxl_full" / "records100").rglob("*.hea")),
        "other_hospitals + wfdb_sample": [
            *sorted((data / "other_hospitals").glob("*.hea")),
            *sorted((data / "wfdb_sample").glob("*.hea")),
        ],
        "tests/fixtures": find_records(REPO / "tests" / "fixtures"),
    }


def _read(path: Path, cfg: QualityConfig) -> tuple[list[str] | None, str | None]:
    try:
        return read_record(path, quality=cfg).warnings, None
    except DiagEcgError as e:
        return None, str(e)


def _check_of(message: str) -> str:
    """Which check a refusal names (the code in its message), or what refused it."""
    for code in CHECKS.values():
        if f"({code})" in message:
            return code
    return "dead lead (one value held > 1 s)" if "flat lead" in message else "other"


def survey(records: dict[str, list[Path]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, paths in records.items():
        t = time.perf_counter()
        counts: dict[str, Any] = {
            "records": len(paths),
            "refused_before": 0,
            "new_refusals": collections.Counter(),
            "warnings": collections.Counter(),
            "new_refused_records": [],
            "warned_records": collections.defaultdict(list),
        }
        for path in paths:
            _, before = _read(path, BEFORE)
            warnings, after = _read(path, AFTER)
            if before is not None:
                counts["refused_before"] += 1
                continue  # refused today already: kept as it is
            if after is not None:
                check = _check_of(after)
                counts["new_refusals"][check] += 1
                counts["new_refused_records"].append({"record": str(path), "check": check, "error": after})
                continue
            for w in warnings or []:
                code = note_code(w)
                if code is not None:
                    counts["warnings"][code] += 1
                    counts["warned_records"][code].append(path.name)
        counts["seconds"] = round(time.perf_counter() - t, 1)
        out[name] = counts
        print(
            f"{name}: {len(paths)} records, refused before {counts['refused_before']}, new refusals "
            f"{dict(counts['new_refusals'])}, warnings {dict(counts['warnings'])} ({counts['seconds']} s)",
            flush=True,
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("DIAGECG_CACHE", "~/.cache/diagecg")))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    result = survey(sources(args.data, args.cache.expanduser()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True, default=dict))


if __name__ == "__main__":
    main()
