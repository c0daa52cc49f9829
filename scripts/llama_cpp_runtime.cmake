# Build only what the diagecg runtime loads from llama-cpp-python: libllama and ggml.
#
# Passed to llama-cpp-python's build by the README's install command:
#   CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DCMAKE_UNITY_BUILD=ON -DCMAKE_PROJECT_INCLUDE=<this file>"
# CMake includes this file after every project() call. llama-cpp-python forces llama.cpp's
# `common` library on (it needs it only for the multimodal mtmd library, which LLAVA_BUILD=OFF
# drops); turning it off again here skips its compilation, which also would not survive a unity
# build. The unity build compiles each batch of source files as one translation unit.
if(PROJECT_NAME STREQUAL "llama.cpp")
  set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
endif()
