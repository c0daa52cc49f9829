"""ruff and mypy over the code base, as part of the one test command (CI runs exactly that command).

mypy sees the installed layout: the three stage folders are mapped into the package (setuptools
``package-dir``: ``training/`` is ``diagecg.training``...), which an editable install resolves with an
import hook that mypy does not run. So the package is assembled as symlinks in a temporary folder and
checked there as ``diagecg``, with every cross-module import resolved.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")


def test_ruff_is_clean() -> None:
    _tool("ruff")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(REPO)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_ruff_format_is_applied() -> None:
    """One formatting style (``ruff format``, line length 110): a file it would change fails here."""
    _tool("ruff")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, "run `ruff format .`: " + proc.stdout[-4000:] + proc.stderr[-2000:]


def _package_tree(root: Path) -> Path:
    """``root/diagecg``: symlinks to the sources, laid out as ``pyproject.toml``'s package-dir says."""
    tomllib: Any = pytest.importorskip("tomllib")  # Python >= 3.11
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        dst = root.joinpath(*package.split("."))
        dst.mkdir(parents=True, exist_ok=True)
        for src in sorted((REPO / folder).glob("*.py")):
            (dst / src.name).symlink_to(src)
    return root / "diagecg"


def test_mypy_is_clean_on_the_installed_layout(tmp_path: Path) -> None:
    _tool("mypy")
    _package_tree(tmp_path / "src")
    env = {**os.environ, "MYPYPATH": str(tmp_path / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "-p",
            "diagecg",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
