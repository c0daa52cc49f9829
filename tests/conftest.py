"""Shared fixtures: where the real shared data lives, the real PTB-XL dataset and its SCP statement table,
and the small records copied into the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.datasets.reports import load_scp_table

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def find_shared_data() -> Path | None:
    """The shared real data: $DIAGECG_SHARED_DATA, else <repo>/../shared/data, else /work/shared/data."""
    candidates = [os.environ.get("DIAGECG_SHARED_DATA"), REPO.parent / "shared" / "data", "/work/shared/data"]
    found = [Path(c) for c in candidates if c and (Path(c) / "ptbxl" / "ptbxl_labels.csv").is_file()]
    return found[0] if found else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; a test that needs it is skipped, with the reason, where it is absent (the
    tests that matter most read the records copied into tests/fixtures instead)."""
    found = find_shared_data()
    if found is None:
        pytest.skip("shared data not found: set DIAGECG_SHARED_DATA to the folder holding ptbxl/ and ecgqa/")
    return found


@pytest.fixture(scope="session")
def ptbxl_root(shared_data: Path) -> Path:
    return shared_data / "ptbxl"


@pytest.fixture(scope="session")
def ptbxl(ptbxl_root: Path) -> PtbxlDataset:
    return PtbxlDataset(ptbxl_root)


@pytest.fixture(scope="session")
def scp_table(ptbxl_root: Path):
    return load_scp_table(ptbxl_root)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
