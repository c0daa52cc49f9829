"""Fixtures shared by the training tests: the real PTB-XL dataset and its SCP statement table."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.datasets.reports import load_scp_table


@pytest.fixture(scope="session")
def ptbxl(ptbxl_root: Path) -> PtbxlDataset:
    return PtbxlDataset(ptbxl_root)


@pytest.fixture(scope="session")
def scp_table(ptbxl_root: Path):
    return load_scp_table(ptbxl_root)
