"""``scripts/install.sh`` (README command 1) and ``scripts/wheelhouse.sh`` (installs without a compiler or a
network): their refusals, the flags they build llama.cpp with, and (slow) a wheelhouse built here and
installed into a fresh venv that then answers the README's question."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"
WHEELHOUSE = REPO / "scripts" / "wheelhouse.sh"
QUESTION = "Does this ECG show symptoms of complete left bundle branch block?"

BASH = shutil.which("bash") or "bash"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the install scripts are bash")


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_install_refuses_bad_arguments_before_creating_anything(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    bad = _run(str(INSTALL), "--venv", str(venv), "--colour")
    assert bad.returncode == 2 and "unknown argument '--colour'" in bad.stderr
    missing = _run(str(INSTALL), "--venv", str(venv), "--wheelhouse", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no wheelhouse folder" in missing.stderr
    bin_dir = tmp_path / "bin"  # a PATH with no cmake and no compiler
    bin_dir.mkdir()
    for tool in ("python3", "dirname", "sed"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    no_compiler = _run(
        str(INSTALL), "--venv", str(venv), env={"PATH": str(bin_dir), "PYTHON": sys.executable}
    )
    assert no_compiler.returncode == 2 and "needs cmake and a C++ compiler" in no_compiler.stderr
    assert "--wheelhouse DIR" in no_compiler.stderr and not venv.exists()
    usage = _run(str(WHEELHOUSE))
    assert usage.returncode == 2 and "usage: scripts/wheelhouse.sh DIR" in usage.stderr


def test_the_scripts_build_llama_cpp_as_ci_and_the_readme_do() -> None:
    flags = subprocess.run(
        [str(REPO / "scripts" / "llama_cpp_flags.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert "-DGGML_NATIVE=OFF" in flags and f"{REPO}/scripts/llama_cpp_runtime.cmake" in flags
    portable = flags.replace(str(REPO), "$PWD")
    for doc in (REPO / ".ci" / "run", REPO / "README.md"):
        assert f'CMAKE_ARGS="{portable}"' in doc.read_text(), f"{doc.name} builds llama.cpp otherwise"
    native = subprocess.run(
        [str(REPO / "scripts" / "llama_cpp_flags.sh"), "--native"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert native == flags.replace("-DGGML_NATIVE=OFF", "-DGGML_NATIVE=ON")  # nothing else differs
    install = INSTALL.read_text()
    assert "native=--native" in install and '--portable) native=""' in install  # local installs: native


@pytest.mark.slow
def test_a_wheelhouse_installs_offline_without_a_compiler_and_answers(tmp_path: Path) -> None:
    """Builds llama-cpp-python (about 2 min on 2 cores), then installs with no index, wheels only, and the
    machine's pip configuration ignored (its find-links would be a second source)."""
    house, venv = tmp_path / "wheels", tmp_path / "venv"
    env = {"PIP_CONFIG_FILE": os.devnull, "PYTHON": sys.executable}
    built = _run(str(WHEELHOUSE), str(house), env=env, timeout=1800)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert any(p.name.startswith("llama_cpp_python-") for p in house.iterdir())
    installed = _run(str(INSTALL), "--venv", str(venv), "--wheelhouse", str(house), env=env, timeout=600)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    answer = subprocess.run(
        [
            str(venv / "bin" / "diagecg"),
            "infer",
            str(REPO / "examples" / "records" / "00180_lr.hea"),
            "-q",
            QUESTION,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert answer.returncode == 0 and answer.stdout.strip() == "yes", answer.stderr
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert not (site / "torch").exists() and (site / "diagecg" / "bundles" / "default").is_dir()
