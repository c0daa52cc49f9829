#!/usr/bin/env bash
# The CMAKE_ARGS that build llama-cpp-python for the diagecg runtime (see scripts/llama_cpp_runtime.cmake):
# only libllama and ggml, portable (no -march=native), one translation unit per batch of sources.
echo "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DCMAKE_UNITY_BUILD=ON -DCMAKE_PROJECT_INCLUDE=$(cd "$(dirname "$0")" && pwd)/llama_cpp_runtime.cmake"
