"""onnxruntime session of the exported ECG tokenizer: preprocessed signal -> FSQ code indices.

The ONNX graph (``export/onnx_tokenizer.py``) is the lead-wise encoder + lead fusion + FSQ
(arXiv 2309.15505) of the training checkpoint. Input ``signal``: float32 ``(B, leads, samples)``,
already preprocessed (``diagecg.preprocess``); output ``indices``: int64 ``(B, frames)`` in
``[0, n_codes)``. Inputs are checked before running, because a NaN or a wrong length does not
make onnxruntime fail: it silently yields meaningless codes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from diagecg.constants import ONNX_INPUT_SIGNAL, ONNX_OUTPUT_INDICES
from diagecg.errors import InferenceError, InputError
from diagecg.runtime.device import ORT_CUDA, check_device, ort_cuda_available, resolve_threads
from diagecg.types import F32Array, I64Array

logger = logging.getLogger(__name__)

_ORT_LOG_ERROR = 3  # onnxruntime severity: 0 verbose ... 3 error, 4 fatal


class EcgTokenizerSession:
    """Runs the ECG tokenizer ONNX graph on CPU or CUDA.

    Args:
        onnx_path: the bundle's ``ecg_tokenizer.onnx``.
        device: ``"auto"`` (CUDA if onnxruntime-gpu offers it), ``"cpu"`` or ``"cuda"``.
        threads: intra-op CPU threads; None = ``device.default_threads()``.
        n_samples: expected samples per lead (the preprocess window); None = take it from the
            ONNX input shape when that is static, else accept any length.
        n_codes: FSQ codebook size; when given, every output index is checked to be below it.

    Attributes:
        device: ``"cuda"`` or ``"cpu"``: the provider really active in the session.
        providers: onnxruntime's list of active providers, in priority order.
        warnings: loud notes about the session (a CUDA provider that did not become active).

    Raises:
        ValueError: bad ``device`` or ``threads``.
        InferenceError: the file cannot be loaded, lacks the ``signal``/``indices`` names, or
            ``device="cuda"`` and CUDA is unavailable or did not become active.
    """

    def __init__(self, onnx_path: str | Path, *, device: str = "auto", threads: int | None = None,
                 n_samples: int | None = None, n_codes: int | None = None) -> None:
        check_device(device)
        self.path = Path(onnx_path)
        self.threads = resolve_threads(threads)
        self.n_codes = n_codes
        self.warnings: list[str] = []
        want_cuda = device == "cuda" or (device == "auto" and ort_cuda_available())
        if device == "cuda" and not ort_cuda_available():
            raise InferenceError(f"device='cuda' requested but onnxruntime offers only "
                                 f"{ort.get_available_providers()}; install onnxruntime-gpu or use "
                                 f"device 'cpu'")
        requested = [ORT_CUDA, "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = _ORT_LOG_ERROR
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=requested)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise InferenceError(f"cannot load the ECG tokenizer {self.path}: {e}") from e

        self.providers: list[str] = list(self._session.get_providers())
        self.device = "cuda" if self.providers and self.providers[0] == ORT_CUDA else "cpu"
        if want_cuda and self.device != "cuda":
            msg = (f"CUDA was requested for the ECG tokenizer but onnxruntime made {self.providers} active "
                   f"(CUDA/cuDNN libraries missing?); it runs on CPU")
            if device == "cuda":
                raise InferenceError(msg)
            logger.warning(msg)
            self.warnings.append(msg)

        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if ONNX_INPUT_SIGNAL not in inputs or ONNX_OUTPUT_INDICES not in outputs:
            raise InferenceError(f"{self.path}: expected input {ONNX_INPUT_SIGNAL!r} and output "
                                 f"{ONNX_OUTPUT_INDICES!r}, found inputs {sorted(inputs)} "
                                 f"outputs {sorted(outputs)}")
        shape = list(inputs[ONNX_INPUT_SIGNAL].shape)  # e.g. ["batch", 12, 1000]
        if len(shape) != 3:
            raise InferenceError(f"{self.path}: input {ONNX_INPUT_SIGNAL!r} has rank {len(shape)}, "
                                 f"expected 3 (batch, leads, samples)")
        self.n_leads: int | None = shape[1] if isinstance(shape[1], int) else None
        onnx_samples = shape[2] if isinstance(shape[2], int) else None
        if n_samples is not None and onnx_samples is not None and n_samples != onnx_samples:
            raise InferenceError(f"{self.path}: the graph takes {onnx_samples} samples per lead but the "
                                 f"preprocess window gives {n_samples}")
        self.n_samples: int | None = n_samples if n_samples is not None else onnx_samples
        logger.debug("ECG tokenizer %s on %s (%d threads)", self.path.name, self.providers, self.threads)

    def _check_signal(self, signal: np.ndarray) -> np.ndarray:
        if not isinstance(signal, np.ndarray):
            raise InputError(f"signal must be a numpy array, got {type(signal).__name__}")
        if signal.dtype != np.float32:
            raise InputError(f"signal dtype is {signal.dtype}, expected float32 (the preprocess output)")
        if signal.ndim == 2:
            signal = signal[None]  # (leads, samples) -> (1, leads, samples)
        if signal.ndim != 3 or signal.shape[0] == 0:
            raise InputError(f"signal shape {signal.shape} is invalid: expected (leads, samples) or "
                             f"(batch, leads, samples) with batch >= 1")
        _, leads, samples = signal.shape
        if self.n_leads is not None and leads != self.n_leads:
            raise InputError(f"signal has {leads} leads, the ECG tokenizer expects {self.n_leads}")
        if self.n_samples is not None and samples != self.n_samples:
            raise InputError(f"signal has {samples} samples per lead, the ECG tokenizer expects "
                             f"{self.n_samples}")
        finite = np.isfinite(signal)
        if not finite.all():
            bad = int(signal.size - np.count_nonzero(finite))
            raise InputError(f"signal contains {bad} NaN/inf values; the ECG tokenizer would return "
                             f"meaningless codes")
        return np.ascontiguousarray(signal)

    def encode(self, signal: F32Array) -> I64Array:
        """Turn preprocessed signals into FSQ code indices.

        Args:
            signal: float32, z-scored, shape ``(leads, samples)`` or ``(B, leads, samples)``.

        Returns:
            int64 indices, shape ``(B, frames)`` (``B = 1`` for a 2-D input).

        Raises:
            InputError: wrong type, dtype or shape, or non-finite values.
            InferenceError: onnxruntime failed or returned out-of-range codes.
        """
        x = self._check_signal(signal)  # (B, leads, samples)
        try:
            (indices,) = self._session.run([ONNX_OUTPUT_INDICES], {ONNX_INPUT_SIGNAL: x})
        except Exception as e:
            raise InferenceError(f"onnxruntime failed on the ECG tokenizer {self.path.name}: {e}") from e
        indices = np.asarray(indices)
        if indices.dtype != np.int64 or indices.ndim != 2 or indices.shape[0] != x.shape[0]:
            raise InferenceError(f"{self.path.name} returned {indices.dtype} {indices.shape}, expected int64 "
                                 f"({x.shape[0]}, frames)")
        if self.n_codes is not None and indices.size and (indices.min() < 0 or indices.max() >= self.n_codes):
            raise InferenceError(f"{self.path.name} returned codes in [{indices.min()}, {indices.max()}], "
                                 f"outside [0, {self.n_codes})")
        return indices
