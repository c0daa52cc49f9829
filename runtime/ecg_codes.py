"""A record's ECG codes and measurements, read through the bundle's tokenizer and cached (torch-free; used
by the pipeline).

The codes are a deterministic function of the signal's bytes, sampling rate and lead names
(``runtime.record_input.signal_key``), so :class:`EcgCodeReader` keeps those of the last ``cache_size``
signals; beside them it keeps the consistency rule's readings of the last prompts
(``runtime.answering.StatementReader``), keyed by the windows' codes, the patient and the calibration.

Kept apart from ``runtime.pipeline`` (which answers): a change to what is measured, what the tokenizer
is given or how long codes are kept changes this module only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from diagecg.bundle import feature_columns
from diagecg.config import PreprocessConfig, SummaryConfig
from diagecg.preprocess import model_inputs
from diagecg.runtime.ecg_session import EcgTokenizerSession
from diagecg.runtime.record_input import signal_key
from diagecg.types import EcgRecord, F32Array, I64Array, PatientInfo

__all__ = ["EcgCodeReader"]


class EcgCodeReader:
    """The ECG codes and measurements of records, the last ``cache_size`` signals' kept (thread-safe).

    Args:
        session: the bundle's ONNX ECG tokenizer session.
        preprocess: the bundle's preprocessing.
        summary: the tokenizer's summary head (it is given the measurements it reads), or None.
        cache_size: signals whose codes are kept (0 = none), and prompts whose readings are kept (at least 1).
    """

    def __init__(
        self,
        session: EcgTokenizerSession,
        preprocess: PreprocessConfig,
        summary: SummaryConfig | None,
        cache_size: int,
    ) -> None:
        self.session = session
        self.preprocess = preprocess
        self.summary = summary
        self.cache_size = cache_size
        self._codes: OrderedDict[bytes, tuple[I64Array, F32Array]] = OrderedDict()
        self._readings: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, rec: EcgRecord) -> tuple[I64Array, F32Array, bool, dict[str, float]]:
        """The record's ECG codes and measurements (from the cache when its signal was seen), whether
        they were cached, and the preprocess / tokenize times in ms."""
        key = signal_key(rec) if self.cache_size else b""
        hit = self._cached(key)
        if hit is not None:
            return hit[0], hit[1], True, {"preprocess": 0.0, "tokenize": 0.0}
        t0 = time.perf_counter()
        # float32 (12, samples) and (measurements,): measured for every bundle (evidence, reports), and
        # given to the tokenizer when it has a summary head
        signal, features = model_inputs(rec, self.preprocess)
        t1 = time.perf_counter()
        summary = self.summary
        graph_features = features[feature_columns(summary)] if summary is not None else None
        indices = self.session.encode(signal, graph_features)[0]  # (1, tokens) -> (tokens,)
        t2 = time.perf_counter()
        self._store(key, indices, features)
        ms = {"preprocess": round((t1 - t0) * 1e3, 3), "tokenize": round((t2 - t1) * 1e3, 3)}
        return indices, features, False, ms

    def _cached(self, key: bytes) -> tuple[I64Array, F32Array] | None:
        if not self.cache_size:
            return None
        with self._lock:
            hit = self._codes.get(key)
            if hit is not None:
                self._codes.move_to_end(key)
            return hit

    def _store(self, key: bytes, indices: I64Array, features: F32Array) -> None:
        if not self.cache_size:
            return
        indices.flags.writeable = False  # shared by every later hit
        features.flags.writeable = False
        with self._lock:
            self._codes[key] = (indices, features)
            while len(self._codes) > self.cache_size:
                self._codes.popitem(last=False)

    def shared_readings(
        self, codes: Sequence[I64Array], patient: PatientInfo, calibration: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """The consistency rule's readings of one prompt (the windows' ECG codes, the patient, the
        calibration in use), kept for the next question about it (as many prompts as ECG codes)."""
        h = hashlib.sha256(
            repr((dataclasses.astuple(patient), id(calibration), sorted(calibration))).encode()
        )
        for c in codes:
            h.update(np.ascontiguousarray(c).tobytes())
        key = h.digest()
        with self._lock:
            hit = self._readings.get(key)
            if hit is None:
                hit = self._readings[key] = {}
            self._readings.move_to_end(key)
            while len(self._readings) > max(self.cache_size, 1):
                self._readings.popitem(last=False)
        return hit

    def clear(self) -> None:
        """Drop the cached ECG codes and the consistency rule's readings."""
        with self._lock:
            self._codes.clear()
            self._readings.clear()
