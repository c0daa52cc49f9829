#!/usr/bin/env bash
# Build a wheelhouse: every wheel `diagecg[EXTRAS]` needs, llama-cpp-python compiled once, so that
# machines with no compiler and no network install with `scripts/install.sh --wheelhouse DIR` (or
# `pip install --no-index --find-links DIR 'diagecg[runtime]'`).
#
#   scripts/wheelhouse.sh DIR [--extras runtime,serve]
#
# Build it on the platform it is for: same OS, CPU architecture and Python minor version (wheels of
# numpy, onnxruntime and llama-cpp-python are platform wheels). llama.cpp is compiled portable
# (GGML_NATIVE=OFF) because the wheel runs on other machines. pip's wheel cache is bypassed for the
# build: a llama-cpp-python wheel cached by an earlier install with other CMAKE_ARGS (a native build,
# say) would otherwise be reused as it is.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
[[ $# -ge 1 && "$1" != -* ]] || { echo "usage: scripts/wheelhouse.sh DIR [--extras runtime,serve]" >&2; exit 2; }
out="$1"; shift
extras=runtime
while [[ $# -gt 0 ]]; do
  case "$1" in
    --extras) extras="$2"; shift 2 ;;
    *) echo "scripts/wheelhouse.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
python=${PYTHON:-python3}
mkdir -p "$out"
CMAKE_ARGS="${CMAKE_ARGS:-$("$repo/scripts/llama_cpp_flags.sh")}" "$python" -m pip wheel --no-cache-dir \
  --wheel-dir "$out" "$repo[$extras]"
echo "wheelhouse: $out ($(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1)); install with:" \
     "scripts/install.sh --wheelhouse $out --extras $extras"
