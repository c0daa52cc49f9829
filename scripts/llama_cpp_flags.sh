#!/usr/bin/env bash
# The CMAKE_ARGS that build llama-cpp-python for the diagecg runtime (see scripts/llama_cpp_runtime.cmake):
# only libllama and ggml, one translation unit per batch of sources, and
#   (default)  portable: no -march=native, for wheels that run on other machines (CI, wheelhouses);
#   --native   for the CPU of this machine (AVX-512, VNNI... where it has them): a local install.
native=OFF
case "${1:-}" in
  "") ;;
  --native) native=ON ;;
  *) echo "usage: scripts/llama_cpp_flags.sh [--native]" >&2; exit 2 ;;
esac
echo "-DGGML_NATIVE=$native -DLLAVA_BUILD=OFF -DCMAKE_UNITY_BUILD=ON -DCMAKE_PROJECT_INCLUDE=$(cd "$(dirname "$0")" && pwd)/llama_cpp_runtime.cmake"
