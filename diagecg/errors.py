"""The one small error hierarchy of diagecg (STYLE R14)."""

from __future__ import annotations


class DiagEcgError(Exception):
    """Base class of every error diagecg raises on purpose."""


class RecordError(DiagEcgError):
    """An ECG record cannot be read or fails validation (names the file and the problem)."""


class LeadError(RecordError):
    """The record's lead set cannot be mapped to the 12 canonical leads."""


class SignalQualityError(RecordError):
    """The signal is unusable: NaN/inf, flat or saturated leads, implausible amplitude, too short."""


class CheckpointError(DiagEcgError):
    """A training checkpoint is missing a file, or its weights/optimiser state disagree with its config."""


class BundleError(DiagEcgError):
    """A bundle is missing a file, has a bad hash, or disagrees with its manifest."""


class InferenceError(DiagEcgError):
    """onnxruntime or llama.cpp failed, or a prompt does not fit the context."""


class InputError(DiagEcgError):
    """A user-supplied question or argument is unusable (too long, contains ECG tokens...)."""
