"""onnxruntime session of the exported ECG tokenizer: preprocessed signal (+ measurements) -> ECG codes.

The ONNX graph (``export/onnx_tokenizer.py``) is the lead-wise encoder + lead fusion + FSQ
(arXiv 2309.15505) of the training checkpoint, plus its diagnostic summary head when it has one.
Input ``signal``: float32 ``(B, leads, samples)``, already preprocessed (``diagecg.preprocess``);
input ``features`` (summary graphs only): float32 ``(B, M)`` measurements of the same window
(``diagecg.preprocess.model_inputs``); output ``indices``: int64 ``(B, tokens)`` in ``[0, n_codes)``,
the summary codes first, then one code per frame. Inputs are checked before running, because a NaN
or a wrong length does not make onnxruntime fail: it silently yields meaningless codes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from diagecg.constants import ONNX_INPUT_FEATURES, ONNX_INPUT_SIGNAL, ONNX_OUTPUT_INDICES
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
        n_codes: ECG codes (frame codebook + summary codes); when given, every output index is checked
            to be below it.

    Attributes:
        takes_features: the graph has the ``features`` input (a tokenizer with summary tokens).
        n_features: measurements per record of that input (None: none, or not static).
        device: ``"cuda"`` or ``"cpu"``: the provider really active in the session.
        providers: onnxruntime's list of active providers, in priority order.
        warnings: loud notes about the session (a CUDA provider that did not become active).

    Raises:
        ValueError: bad ``device`` or ``threads``.
        InferenceError: the file cannot be loaded, lacks the ``signal``/``indices`` names, or
            ``device="cuda"`` and CUDA is unavailable or did not become active.
    """

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        device: str = "auto",
        threads: int | None = None,
        n_samples: int | None = None,
        n_codes: int | None = None,
    ) -> None:
        check_device(device)
        self.path = Path(onnx_path)
        self.threads = resolve_threads(threads)
        self.n_codes = n_codes
        self.warnings: list[str] = []
        want_cuda = device == "cuda" or (device == "auto" and ort_cuda_available())
        if device == "cuda" and not ort_cuda_available():
            raise InferenceError(
                f"device='cuda' requested but onnxruntime offers only "
                f"{ort.get_available_providers()}; install onnxruntime-gpu or use "
                f"device 'cpu'"
            )
        requested = [ORT_CUDA, "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = _ORT_LOG_ERROR
        # onnxruntime's worker threads spin after each run, waiting for the next; here llama.cpp runs next
        # on the same cores, and a spinning thread takes one of them from it (issue 27: the tiny model's
        # first answer at 2 threads 51.8 ms with spinning, 31.4 ms without)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(self.path), sess_options=opts, providers=requested)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise InferenceError(f"cannot load the ECG tokenizer {self.path}: {e}") from e

        self._session: ort.InferenceSession | None = session  # None once closed
        self.providers: list[str] = list(session.get_providers())
        self.device = "cuda" if self.providers and self.providers[0] == ORT_CUDA else "cpu"
        if want_cuda and self.device != "cuda":
            msg = (
                f"CUDA was requested for the ECG tokenizer but onnxruntime made {self.providers} active "
                f"(CUDA/cuDNN libraries missing?); it runs on CPU"
            )
            if device == "cuda":
                raise InferenceError(msg)
            logger.warning(msg)
            self.warnings.append(msg)

        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if ONNX_INPUT_SIGNAL not in inputs or ONNX_OUTPUT_INDICES not in outputs:
            raise InferenceError(
                f"{self.path}: expected input {ONNX_INPUT_SIGNAL!r} and output "
                f"{ONNX_OUTPUT_INDICES!r}, found inputs {sorted(inputs)} "
                f"outputs {sorted(outputs)}"
            )
        shape = list(inputs[ONNX_INPUT_SIGNAL].shape)  # e.g. ["batch", 12, 1000]
        if len(shape) != 3:
            raise InferenceError(
                f"{self.path}: input {ONNX_INPUT_SIGNAL!r} has rank {len(shape)}, "
                f"expected 3 (batch, leads, samples)"
            )
        self.n_leads: int | None = shape[1] if isinstance(shape[1], int) else None
        onnx_samples = shape[2] if isinstance(shape[2], int) else None
        if n_samples is not None and onnx_samples is not None and n_samples != onnx_samples:
            raise InferenceError(
                f"{self.path}: the graph takes {onnx_samples} samples per lead but the "
                f"preprocess window gives {n_samples}"
            )
        self.n_samples: int | None = n_samples if n_samples is not None else onnx_samples
        features = inputs.get(ONNX_INPUT_FEATURES)  # only in a graph with summary tokens
        self.takes_features = features is not None
        f_shape = list(features.shape) if features is not None else [None, None]  # e.g. ["batch", 75]
        if len(f_shape) != 2:
            raise InferenceError(
                f"{self.path}: input {ONNX_INPUT_FEATURES!r} has rank {len(f_shape)}, "
                f"expected 2 (batch, measurements)"
            )
        self.n_features: int | None = f_shape[1] if isinstance(f_shape[1], int) else None
        logger.debug("ECG tokenizer %s on %s (%d threads)", self.path.name, self.providers, self.threads)

    def _check_signal(self, signal: np.ndarray) -> np.ndarray:
        if not isinstance(signal, np.ndarray):
            raise InputError(f"signal must be a numpy array, got {type(signal).__name__}")
        if signal.dtype != np.float32:
            raise InputError(f"signal dtype is {signal.dtype}, expected float32 (the preprocess output)")
        if signal.ndim == 2:
            signal = signal[None]  # (leads, samples) -> (1, leads, samples)
        if signal.ndim != 3 or signal.shape[0] == 0:
            raise InputError(
                f"signal shape {signal.shape} is invalid: expected (leads, samples) or "
                f"(batch, leads, samples) with batch >= 1"
            )
        _, leads, samples = signal.shape
        if self.n_leads is not None and leads != self.n_leads:
            raise InputError(f"signal has {leads} leads, the ECG tokenizer expects {self.n_leads}")
        if self.n_samples is not None and samples != self.n_samples:
            raise InputError(
                f"signal has {samples} samples per lead, the ECG tokenizer expects {self.n_samples}"
            )
        finite = np.isfinite(signal)
        if not finite.all():
            bad = int(signal.size - np.count_nonzero(finite))
            raise InputError(
                f"signal contains {bad} NaN/inf values; the ECG tokenizer would return meaningless codes"
            )
        return np.ascontiguousarray(signal)

    def _check_features(self, features: np.ndarray | None, batch: int) -> np.ndarray | None:
        if not self.takes_features:
            if features is not None:
                raise InputError(
                    "this ECG tokenizer has no summary tokens: it takes no measurements (pass features=None)"
                )
            return None
        if features is None:
            raise InputError(
                "this ECG tokenizer has summary tokens: pass the record's measurements "
                "(diagecg.preprocess.model_inputs)"
            )
        if not isinstance(features, np.ndarray):
            raise InputError(f"features must be a numpy array, got {type(features).__name__}")
        if features.dtype != np.float32:
            raise InputError(f"features dtype is {features.dtype}, expected float32 (diagecg.features)")
        if features.ndim == 1:
            features = features[None]  # (M,) -> (1, M)
        n = self.n_features
        if features.ndim != 2 or features.shape[0] != batch or (n is not None and features.shape[1] != n):
            raise InputError(
                f"features shape {features.shape} is invalid: expected ({batch}, "
                f"{n if n is not None else 'measurements'}), one row per signal"
            )
        finite = np.isfinite(features)
        if not finite.all():
            bad = int(features.size - np.count_nonzero(finite))
            raise InputError(
                f"features contain {bad} NaN/inf values; the ECG tokenizer would return "
                f"meaningless summary codes"
            )
        return np.ascontiguousarray(features)

    def close(self) -> None:
        """Free the onnxruntime session now. Idempotent; a later ``encode`` raises ``InferenceError``."""
        self._session = None

    def encode(self, signal: F32Array, features: F32Array | None = None) -> I64Array:
        """Turn preprocessed signals (and their measurements) into ECG code indices.

        Args:
            signal: float32, z-scored, shape ``(leads, samples)`` or ``(B, leads, samples)``.
            features: float32 measurements of the same windows, shape ``(M,)`` or ``(B, M)``; required
                iff the graph has summary tokens (``takes_features``), else None.

        Returns:
            int64 indices, shape ``(B, tokens)`` (``B = 1`` for a 2-D signal): the summary codes, then
            the frame codes.

        Raises:
            InputError: wrong type, dtype or shape, non-finite values, or features missing/unexpected.
            InferenceError: onnxruntime failed or returned out-of-range codes.
        """
        x = self._check_signal(signal)  # (B, leads, samples)
        f = self._check_features(features, x.shape[0])  # (B, M) or None
        feeds = {ONNX_INPUT_SIGNAL: x} if f is None else {ONNX_INPUT_SIGNAL: x, ONNX_INPUT_FEATURES: f}
        if self._session is None:
            raise InferenceError(
                f"{self.path.name}: the ECG tokenizer was closed (close()); load the bundle again"
            )
        try:
            (indices,) = self._session.run([ONNX_OUTPUT_INDICES], feeds)
        except Exception as e:
            raise InferenceError(f"onnxruntime failed on the ECG tokenizer {self.path.name}: {e}") from e
        indices = np.asarray(indices)
        if indices.dtype != np.int64 or indices.ndim != 2 or indices.shape[0] != x.shape[0]:
            raise InferenceError(
                f"{self.path.name} returned {indices.dtype} {indices.shape}, expected int64 "
                f"({x.shape[0]}, tokens)"
            )
        if self.n_codes is not None and indices.size and (indices.min() < 0 or indices.max() >= self.n_codes):
            raise InferenceError(
                f"{self.path.name} returned codes in [{indices.min()}, {indices.max()}], "
                f"outside [0, {self.n_codes})"
            )
        return indices
