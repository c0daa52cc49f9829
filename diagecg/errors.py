"""The one small error hierarchy of diagecg (conventions: validate at the boundary, completely)."""

from __future__ import annotations


class DiagEcgError(Exception):
    """Base class of every error diagecg raises on purpose."""


class RecordError(DiagEcgError):
    """An ECG record cannot be read or fails validation (names the file and the problem)."""


class RecordNotFoundError(RecordError, FileNotFoundError):
    """The record's header or one of its signal files does not exist."""


class HeaderError(RecordError):
    """A record header is malformed or incomplete (missing sampling rate or gain, bad numbers...)."""


class SignalFileError(RecordError):
    """A signal file is unsafe or inconsistent with its header (outside the record folder, truncated,
    unsupported format)."""


class LeadError(RecordError):
    """The record's lead set cannot be mapped to the 12 canonical leads."""


class SignalQualityError(RecordError):
    """The signal is unusable: NaN/inf, flat or saturated leads, implausible amplitude, too short."""


class CheckpointError(DiagEcgError):
    """A training checkpoint is missing a file, or its weights/optimiser state disagree with its config."""


class BaseModelError(DiagEcgError):
    """A base LLM cannot be used: not found, an unsupported architecture or text tokenizer, unreadable."""


class BundleError(DiagEcgError):
    """A bundle is missing a file, has a bad hash, or disagrees with its manifest."""


class ExportError(DiagEcgError):
    """An export check failed: LoRA merge (NaN, logits), ONNX or GGUF parity against the source model."""


class InferenceError(DiagEcgError):
    """onnxruntime or llama.cpp failed, or a prompt does not fit the context."""


class InputError(DiagEcgError):
    """A user-supplied question or argument is unusable (too long, contains ECG tokens...)."""


class ConfigError(InputError, ValueError):
    """A config is unusable: a JSON file that is missing or malformed, a field of the wrong JSON type, a
    bad ``--set key=value`` or a value its dataclass refuses. The message is one line naming the config,
    the field, what is allowed and the value.

    An :class:`InputError`, so every command reports it as a usage error (exit code 2); also a
    ``ValueError``, so code that caught the ``ValueError`` configs raised before keeps working.
    """
