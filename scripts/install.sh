#!/usr/bin/env bash
# Install diagecg into a virtual environment with pip (README "Set up and run").
#
#   scripts/install.sh                          # <checkout>/.venv with the runtime: diagecg infer/report/validate
#   scripts/install.sh --extras runtime,serve   # any extras of pyproject.toml (dev = everything)
#   scripts/install.sh --wheelhouse DIR         # offline, no compiler: only the wheels in DIR
#   scripts/install.sh --venv /opt/diagecg      # another environment folder
#   scripts/install.sh --portable               # llama.cpp built for any x86-64 CPU, not only this one
#
# Online (the default), pip installs this checkout in editable mode and compiles llama-cpp-python (it is
# published as source only) with the flags of scripts/llama_cpp_flags.sh: for this machine's CPU
# (GGML_NATIVE=ON: AVX-512 and VNNI kernels where it has them; bench/prefill.py measures the gain), or
# portable with --portable; about 2-3 min on 2 cores, needs cmake and a C++ compiler. The native build
# skips pip's wheel cache, which could hold a portable build of the same version. With --wheelhouse DIR
# (a folder written by scripts/wheelhouse.sh), pip reads only DIR (--no-index): no network, no compiler,
# and diagecg comes from its wheel there. torch is never installed here: training needs
# `pip install torch==2.13.0` first (README).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

venv="$repo/.venv" extras=runtime wheelhouse="" native=--native
while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --extras) extras="$2"; shift 2 ;;
    --wheelhouse) wheelhouse="$2"; shift 2 ;;
    --portable) native=""; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scripts/install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "scripts/install.sh: diagecg needs Python 3.10 or newer ($python is older)" >&2; exit 2; }
if [[ -n "$wheelhouse" ]]; then
  [[ -d "$wheelhouse" ]] || { echo "scripts/install.sh: no wheelhouse folder '$wheelhouse'" >&2; exit 2; }
elif ! { command -v cmake && command -v c++; } >/dev/null; then
  echo "scripts/install.sh: compiling llama-cpp-python needs cmake and a C++ compiler" \
       "(Debian/Ubuntu: apt install cmake g++), or install from a wheelhouse: --wheelhouse DIR" >&2
  exit 2
fi
[[ -x "$venv/bin/pip" ]] || "$python" -m venv "$venv"

if [[ -n "$wheelhouse" ]]; then
  "$venv/bin/pip" install --no-index --only-binary :all: --find-links "$wheelhouse" "diagecg[$extras]"
else
  cache=()
  [[ -n "$native" ]] && cache=(--no-cache-dir)
  CMAKE_ARGS="${CMAKE_ARGS:-$("$repo/scripts/llama_cpp_flags.sh" $native)}" \
    "$venv/bin/pip" install "${cache[@]}" -e "$repo[$extras]"
fi
echo "installed: $venv/bin/diagecg ($("$venv/bin/diagecg" --version))"
