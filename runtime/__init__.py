"""Torch-free offline runtime: onnxruntime + llama-cpp-python (never torch, transformers or peft)."""
