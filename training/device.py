"""The torch device of the training, evaluation and LLM stages, resolved one way for all of them.

``"auto"`` is CUDA when torch sees a GPU, else the CPU; ``"cpu"`` is the CPU; ``"cuda"`` or ``"cuda:N"``
demands a GPU and is refused on a machine without one, so a run never falls back to the CPU silently.
(The runtime's onnxruntime/llama.cpp devices are another matter: ``diagecg.runtime.device``.)
"""

from __future__ import annotations

import torch

from diagecg.errors import ConfigError


def resolve_device(name: str, field: str = "device") -> torch.device:
    """The torch device a config's ``device`` field names.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (each config checks its own set).
        field: what to call the setting in the error, e.g. ``"TokenizerTrainConfig.device"``.

    Raises:
        ConfigError: a CUDA device asked on a machine where torch sees none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field}={name!r}: CUDA is not available on this machine")
    return torch.device(name)
