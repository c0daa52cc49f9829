"""Core stage configs and their exact JSON round trip (conventions: configs).

Every config is a dataclass checked in ``__post_init__``; defaults live only
here. ``to_dict``/``from_dict`` round-trip exactly (tuples stay tuples);
unknown keys are dropped with a warning that names them; a missing required
key is an error. ``apply_overrides`` parses CLI ``--set key=value`` pairs
with the field's type; a dotted key reaches into a nested config
(``encoder.stem_channels=8``) or a ``dict[str, ...]`` field (``min_top1.q8_0=0.9``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

from diagecg.errors import ConfigError

logger = logging.getLogger(__name__)

C = TypeVar("C", bound="ConfigMixin")


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _expected(tp: Any, plural: bool = False) -> str:
    """What a field of type ``tp`` takes, in JSON words, for error messages ("a list of integers")."""
    optional, inner = _is_optional(tp)
    if optional:
        return f"{_expected(inner, plural)} or null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return f"{'lists' if plural else 'a list'} of {_expected(args[0], True) if args else 'values'}"
    if origin is dict:
        return f"{'objects' if plural else 'an object'} of {_expected(args[1], True) if args else 'values'}"
    if origin is typing.Literal:
        return f"{'values among' if plural else 'one of'} {', '.join(repr(a) for a in args)}"
    if isinstance(tp, type) and issubclass(tp, ConfigMixin):
        return f"{'objects' if plural else 'an object'} ({tp.__name__})"
    names = {
        int: ("an integer", "integers"),
        float: ("a number", "numbers"),
        str: ("a string", "strings"),
        bool: ("true or false", "booleans"),
    }
    return names[tp][plural] if tp in names else str(tp)


def json_field_value(tp: Any, value: Any, where: str) -> Any:
    """Check a JSON value against a config field's declared type and return it as that type.

    This is the one check of JSON scalars for every config: values are never coerced, so an ``int``
    field refuses ``"100"``, ``100.5`` and ``true``; a ``float`` field takes a number (an integer
    becomes a float); a ``str`` field refuses numbers; a ``bool`` field takes only ``true``/``false``.
    A list becomes a tuple (each element checked), an object a ``dict`` or a nested config.

    Args:
        tp: the field's declared type (``typing.get_type_hints`` of the config class).
        value: the value ``json.loads`` gave.
        where: the field for messages, ``"TokenizerTrainConfig.steps"``.

    Raises:
        ConfigError: ``value`` is not of type ``tp``; one line naming ``where``, the expected type and
            the value.
    """
    declared = tp
    optional, tp = _is_optional(tp)
    if value is None and (optional or tp is Any):
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        elem = args[0] if args else Any
        return tuple(json_field_value(elem, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict and isinstance(value, dict):
        elem = args[1] if args else Any
        return {str(k): json_field_value(elem, v, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal and isinstance(value, str) and value in args:
        return value
    if isinstance(tp, type) and issubclass(tp, ConfigMixin) and isinstance(value, dict):
        return tp.from_dict(value)
    if tp is bool and isinstance(value, bool):
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int and number and isinstance(value, int):
        return value
    if tp is float and number:
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(
        f"{where}={value!r} is invalid: expected {_expected(declared)}, got {type(value).__name__}"
    )


def _parse_text(tp: Any, text: str, name: str) -> Any:
    """Parse a CLI string into the field's type."""
    optional, inner = _is_optional(tp)
    if optional and text.lower() in ("none", "null", ""):
        return None
    tp = inner if optional else tp
    origin = typing.get_origin(tp)
    try:
        if origin is tuple:
            args = typing.get_args(tp)
            elem = args[0] if args else str
            parts = [p for p in text.split(",") if p.strip()]
            return tuple(_parse_text(elem, p.strip(), name) for p in parts)
        if tp is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if tp is str or tp is Any:
            return text
        if origin is dict and text in ("", "{}"):  # entries are set one by one: name.key=value
            return {}
        origin_literal = typing.get_origin(tp)
        if origin_literal is typing.Literal:
            allowed = typing.get_args(tp)
            if text not in allowed:
                raise ValueError(text)
            return text
    except ValueError:
        raise ConfigError(f"--set {name}={text!r}: cannot parse as {tp}") from None
    raise ConfigError(f"--set {name}: field type {tp} cannot be set from the command line")


class ConfigMixin:
    """JSON round trip for config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, ConfigMixin):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = [x.to_dict() if isinstance(x, ConfigMixin) else x for x in v]
            elif isinstance(v, dict):
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """The config a JSON object describes: each value checked by :func:`json_field_value`, unknown
        keys dropped with a warning, missing ones at their defaults.

        Raises:
            ConfigError: ``data`` is not a dict, a value has the wrong type, a required key is missing,
                or ``__post_init__`` refuses a value.
        """
        if not isinstance(data, dict):
            raise ConfigError(
                f"{cls.__name__}.from_dict expects a dict (a JSON object), got {type(data).__name__}"
            )
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            logger.warning("%s: ignoring unknown keys %s", cls.__name__, unknown)
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = json_field_value(hints[name], data[name], f"{cls.__name__}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{cls.__name__}: required key {name!r} is missing")
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """The config in the JSON file ``path`` (:meth:`from_dict`).

        Raises:
            ConfigError: the file is missing, unreadable or not JSON, or :meth:`from_dict` refuses it.
        """
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{cls.__name__}: config file {p} not found")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{cls.__name__}: cannot read config file {p}: {e}") from e
        except json.JSONDecodeError as e:
            raise ConfigError(f"{cls.__name__}: config file {p} is not JSON: {e}") from e
        return cls.from_dict(data)


def apply_overrides(cfg: C, pairs: typing.Iterable[str]) -> C:
    """Return a copy of ``cfg`` with ``key=value`` overrides parsed by field type.

    ``a.b=value`` sets field ``b`` of the nested config ``a`` (an unset, ``None`` one starts from
    what ``from_dict`` fills in for a partial dict) or the entry ``b`` of a ``dict[str, V]`` field.
    The result goes through ``from_dict``, so every level is checked again.

    Raises:
        ConfigError: unknown key, malformed pair, or a value of the wrong type.
    """
    data = cfg.to_dict()
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, text = (part.strip() for part in pair.split("=", 1))
        *parents, leaf = key.split(".")
        node, tp = data, type(cfg)
        for depth, name in enumerate(parents):
            tp = _field_type(tp, name, ".".join(parents[:depth]))
            if node.get(name) is None:
                node[name] = {}
            node = node[name]
        leaf_tp = _field_type(tp, leaf, ".".join(parents))
        node[leaf] = _json_ready(_parse_text(leaf_tp, text, key))
    return type(cfg).from_dict(data)


def _field_type(tp: Any, name: str, where: str) -> Any:
    """The declared type of ``name`` inside ``tp`` (a config class, or a ``dict[str, V]`` type)."""
    _, tp = _is_optional(tp)
    if typing.get_origin(tp) is dict:
        args = typing.get_args(tp)
        return args[1] if args else Any
    if isinstance(tp, type) and issubclass(tp, ConfigMixin):
        names = {f.name for f in dataclasses.fields(tp)}  # type: ignore[arg-type]
        if name in names:
            return typing.get_type_hints(tp)[name]
        key = f"{where}.{name}" if where else name
        raise ConfigError(f"--set: unknown key {key!r} for {tp.__name__}; known: {sorted(names)}")
    raise ConfigError(f"--set: {where!r} is a {tp}, not a config with fields; cannot set {where}.{name}")


def _json_ready(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_field(cond: bool, cls: str, field: str, value: Any, allowed: str) -> None:
    """The check every config's ``__post_init__`` makes of its fields: unless ``cond`` holds, raise
    :class:`ConfigError` ``"<cls>.<field>=<value> is invalid: <allowed>"``."""
    if not cond:
        raise ConfigError(f"{cls}.{field}={value!r} is invalid: {allowed}")


# --- core configs -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PreprocessConfig(ConfigMixin):
    """How a record becomes the model input: float32 (12, fs_hz * window_s), z-scored per lead."""

    fs_hz: int = 500  # model sampling rate; records are resampled to it
    window_s: float = 10.0  # model window; longer records are cropped, shorter ones rejected
    crop: str = "start"  # "start" | "center": where the window is taken from a longer record
    highpass_hz: float | None = 0.5  # baseline-wander removal (zero-phase Butterworth); None = off
    lowpass_hz: float | None = None  # None = off; must be < fs_hz / 2
    filter_order: int = 2
    zscore_eps: float = 1e-6  # guards division by ~0 std; flat leads are rejected before this
    min_duration_s: float | None = None  # None = window_s: a record shorter than this is an error
    pad_short_s: float = 0.0  # a record short of the window by at most this much is edge-padded
    # diagecg.features works on the same window at one rate and bandwidth whatever the record's rate,
    # so a 100 Hz and a 500 Hz recording of one ECG measure the same (diagecg.preprocess.measure_inputs)
    measure_fs_hz: int = 250
    measure_lowpass_hz: float = 40.0

    def __post_init__(self) -> None:
        n = "PreprocessConfig"
        check_field(self.fs_hz > 0, n, "fs_hz", self.fs_hz, "must be > 0")
        check_field(self.window_s > 0, n, "window_s", self.window_s, "must be > 0")
        check_field(self.crop in ("start", "center"), n, "crop", self.crop, "one of 'start', 'center'")
        if self.highpass_hz is not None:
            check_field(
                0 < self.highpass_hz < self.fs_hz / 2,
                n,
                "highpass_hz",
                self.highpass_hz,
                f"None or in (0, {self.fs_hz / 2})",
            )
        if self.lowpass_hz is not None:
            check_field(
                0 < self.lowpass_hz < self.fs_hz / 2,
                n,
                "lowpass_hz",
                self.lowpass_hz,
                f"None or in (0, {self.fs_hz / 2})",
            )
        check_field(self.filter_order >= 1, n, "filter_order", self.filter_order, "must be >= 1")
        check_field(self.pad_short_s >= 0, n, "pad_short_s", self.pad_short_s, "must be >= 0")
        check_field(self.measure_fs_hz >= 100, n, "measure_fs_hz", self.measure_fs_hz, "must be >= 100")
        check_field(
            0 < self.measure_lowpass_hz < self.measure_fs_hz / 2,
            n,
            "measure_lowpass_hz",
            self.measure_lowpass_hz,
            f"must be in (0, {self.measure_fs_hz / 2})",
        )

    @property
    def n_samples(self) -> int:
        return int(round(self.fs_hz * self.window_s))


@dataclasses.dataclass(frozen=True)
class QualityConfig(ConfigMixin):
    """Thresholds of ``diagecg.quality.check_signal``: when a signal (float32 mV) is unusable."""

    min_duration_s: float = 2.0  # shorter records are rejected
    flat_std_mv: float = 0.005  # a lead whose std over the record is below this is flat
    rail_fraction: float = 0.1  # a lead with more of its samples at its min or max value is saturated
    rail_warn_fraction: float = 0.02  # ... and above this fraction a warning is added
    max_abs_mv: float = 20.0  # max |x - median| above this: not mV (uV given as mV?)
    allow_flat_leads: bool = False  # flat leads (not all): a warning instead of an error (degraded mode)
    # "is this an ECG" (diagecg.quality.ecg_problems; the margins against real records: README)
    require_ecg: bool = True  # refuse signals that fail these checks
    max_lead_relation_error: float = 0.25  # Einthoven/Goldberger: rms(II - (I + III)) / rms, ...
    min_lead_difference: float = 0.005  # two leads closer than this (rms ratio) are copies of one signal
    min_qrs_concentration: float = 2.2  # slope energy near detected beats / its average; noise ~1
    # plausibility (diagecg.plausibility; the margins against the project's real records: README): past a
    # *_warn threshold the answer carries a warning with the check's code, past a *_refuse one the record
    # is refused
    plausibility: bool = True  # run the plausibility checks (with require_ecg, on 12-lead records)
    min_wave_mv: float = 0.02  # a P or T wave smaller than this has no sign (limb-electrode check)
    rate_warn: float = 1.1  # |ln(HR / 70 bpm) + ln(slope centroid / 18 Hz)| above this warns ...
    rate_refuse: float = 1.6  # ... and above this refuses (a rate 5x too high or low gives >= 1.85)
    qrs_warn_mv: tuple[float, float] = (0.4, 12.0)  # the largest QRS (peak to peak) outside this warns ...
    qrs_refuse_mv: tuple[float, float] = (0.15, 20.0)  # ... and outside this refuses
    time_order_warn: float = 0.3  # rms after the QRS / before it (T after, P before) below this warns
    repeat_warn: float = 1e-3  # a window that equals itself shifted to within this (energy share) warns ...
    repeat_refuse: float = 1e-4  # ... and within this refuses (copies of one segment)
    beat_change_warn: float = 2e-3  # beat-to-beat change (CV) of the QRS slope energy below this warns ...
    beat_change_refuse: float = 3e-4  # ... and below this refuses (identical, synthetic beats)
    axis_change_warn: float = 3e-3  # beat-to-beat change of the QRS energy's share among leads: below warns
    lead_noise_warn: float = 0.8  # a lead scoring below this (beats unlike each other, energy not at QRS)
    dropout_warn: float = 0.008  # share of samples jumping to one value and back: above this warns ...
    dropout_refuse: float = 0.02  # ... and above this refuses
    constant_run_warn_s: float = 0.6  # a live lead held at one value this long warns ...
    constant_run_refuse_s: float = 1.0  # ... and this long makes it a dead lead, like a flat one

    def __post_init__(self) -> None:
        n = "QualityConfig"
        check_field(self.min_duration_s > 0, n, "min_duration_s", self.min_duration_s, "must be > 0")
        check_field(self.flat_std_mv >= 0, n, "flat_std_mv", self.flat_std_mv, "must be >= 0")
        check_field(0 < self.rail_fraction <= 1, n, "rail_fraction", self.rail_fraction, "must be in (0, 1]")
        check_field(
            0 < self.rail_warn_fraction <= self.rail_fraction,
            n,
            "rail_warn_fraction",
            self.rail_warn_fraction,
            "must be in (0, rail_fraction]",
        )
        check_field(self.max_abs_mv > 0, n, "max_abs_mv", self.max_abs_mv, "must be > 0")
        check_field(
            self.max_lead_relation_error > 0,
            n,
            "max_lead_relation_error",
            self.max_lead_relation_error,
            "must be > 0",
        )
        check_field(
            self.min_lead_difference >= 0, n, "min_lead_difference", self.min_lead_difference, "must be >= 0"
        )
        check_field(
            self.min_qrs_concentration >= 0,
            n,
            "min_qrs_concentration",
            self.min_qrs_concentration,
            "must be >= 0",
        )
        for low, high in (
            ("rate_warn", "rate_refuse"),
            ("repeat_refuse", "repeat_warn"),
            ("beat_change_refuse", "beat_change_warn"),
            ("dropout_warn", "dropout_refuse"),
            ("constant_run_warn_s", "constant_run_refuse_s"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            check_field(0 < lo <= hi, n, f"{low}, {high}", (lo, hi), f"must satisfy 0 < {low} <= {high}")
        for name in ("qrs_warn_mv", "qrs_refuse_mv"):
            v = tuple(getattr(self, name))
            check_field(
                len(v) == 2 and 0 <= v[0] < v[1], n, name, v, "must be (low, high) with 0 <= low < high"
            )
        inside = self.qrs_refuse_mv[0] <= self.qrs_warn_mv[0] and self.qrs_warn_mv[1] <= self.qrs_refuse_mv[1]
        check_field(
            inside, n, "qrs_warn_mv", self.qrs_warn_mv, f"must lie in qrs_refuse_mv {self.qrs_refuse_mv}"
        )
        for name in ("min_wave_mv", "time_order_warn", "lead_noise_warn", "axis_change_warn"):
            check_field(getattr(self, name) >= 0, n, name, getattr(self, name), "must be >= 0")


@dataclasses.dataclass(frozen=True)
class FSQConfig(ConfigMixin):
    """Finite scalar quantisation (arXiv 2309.15505): one code per frame, prod(levels) codes."""

    levels: tuple[int, ...] = (6, 6, 6, 6)

    def __post_init__(self) -> None:
        check_field(
            len(self.levels) >= 1 and all(int(v) >= 2 for v in self.levels),
            "FSQConfig",
            "levels",
            self.levels,
            "a non-empty tuple of ints >= 2",
        )

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def dim(self) -> int:
        return len(self.levels)


@dataclasses.dataclass(frozen=True)
class EncoderConfig(ConfigMixin):
    """Lead-wise 1-D conv encoder (shared across leads) + lead fusion + decoder for reconstruction."""

    n_leads: int = 12
    n_samples: int = 5000  # input length; equals PreprocessConfig.n_samples
    stem_channels: int = 32
    stage_channels: tuple[int, ...] = (32, 64, 64, 128)  # one stride-2 stage each: downsample 2**len
    groups: int = 8  # GroupNorm groups
    fused_channels: int = 256  # width after fusing the leads, before projecting to FSQ dim
    negative_slope: float = 0.1  # LeakyReLU

    def __post_init__(self) -> None:
        n = "EncoderConfig"
        check_field(self.n_leads >= 1, n, "n_leads", self.n_leads, "must be >= 1")
        check_field(
            self.n_samples >= 2 ** len(self.stage_channels),
            n,
            "n_samples",
            self.n_samples,
            "must be >= the total downsampling",
        )
        check_field(len(self.stage_channels) >= 1, n, "stage_channels", self.stage_channels, "non-empty")
        check_field(self.groups >= 1, n, "groups", self.groups, "must be >= 1")
        for c in (self.stem_channels, *self.stage_channels):
            check_field(
                c % self.groups == 0, n, "groups", self.groups, f"must divide every channel count ({c})"
            )

    @property
    def downsample(self) -> int:
        return 2 ** len(self.stage_channels)

    @property
    def n_frames(self) -> int:
        """ECG tokens per record: ceil(n_samples / downsample) (5000 -> 313, 1000 -> 63)."""
        return -(-self.n_samples // self.downsample)


@dataclasses.dataclass(frozen=True)
class SummaryConfig(ConfigMixin):
    """Diagnostic summary tokens: one token per finding, placed before the ECG's frame tokens.

    A head on the pooled encoder features and the signal measurements (``diagecg.features``) predicts
    every finding (multi-label, trained with the reconstruction); each finding's logit is quantised
    by a one-dimensional FSQ with ``levels`` levels, and finding ``f`` at level ``l`` is the ECG code
    ``frame_codes + f * levels + l``. Empty ``findings`` turns the summary off (the paper's tokenizer).
    """

    findings: tuple[str, ...] = ()  # PTB-XL superclasses and SCP codes, in token order
    levels: int = 8  # quantisation levels per finding
    features: tuple[str, ...] = ()  # diagecg.features.FEATURE_NAMES the head was trained on
    hidden: int = 128  # width of the head's hidden layer
    # measurement tokens, after the finding tokens: measurement m in bin b (of len(edges[m]) + 1) is the
    # ECG code frame_codes + len(findings) * levels + sum(bins of measurements before m) + b
    measure_tokens: tuple[str, ...] = ()  # names in diagecg.features.FEATURE_NAMES
    measure_edges: tuple[tuple[float, ...], ...] = ()  # increasing bin edges, one tuple per name

    def __post_init__(self) -> None:
        n = "SummaryConfig"
        check_field(
            len(self.measure_edges) == len(self.measure_tokens),
            n,
            "measure_edges",
            self.measure_edges,
            "one tuple of edges per measure_tokens name",
        )
        increasing = all(
            len(e) >= 1 and all(a < b for a, b in zip(e, e[1:], strict=False)) for e in self.measure_edges
        )
        check_field(increasing, n, "measure_edges", self.measure_edges, "each a non-empty increasing tuple")
        check_field(
            set(self.measure_tokens) <= set(self.features),
            n,
            "measure_tokens",
            self.measure_tokens,
            "must be among the head's features",
        )
        check_field(self.levels >= 2, n, "levels", self.levels, "must be >= 2")
        check_field(
            len(set(self.findings)) == len(self.findings), n, "findings", self.findings, "must be distinct"
        )
        check_field(
            not self.findings or len(self.features) > 0,
            n,
            "features",
            self.features,
            "must name the measurements when there are findings",
        )
        check_field(self.hidden >= 1, n, "hidden", self.hidden, "must be >= 1")

    @property
    def enabled(self) -> bool:
        return bool(self.findings)

    @property
    def n_tokens(self) -> int:
        """Summary tokens per ECG: one per finding, then one per measurement token."""
        return len(self.findings) + len(self.measure_tokens)

    @property
    def n_finding_codes(self) -> int:
        """Codes of the finding tokens (``findings * levels``); the measurement codes follow them."""
        return len(self.findings) * self.levels

    @property
    def n_codes(self) -> int:
        """Codes the summary adds to the ECG vocabulary (findings, then measurement bins)."""
        return self.n_finding_codes + sum(len(e) + 1 for e in self.measure_edges)


@dataclasses.dataclass(frozen=True)
class VocabConfig(ConfigMixin):
    """Where the ECG tokens sit in the extended LLM vocabulary."""

    n_codes: int = 1296  # FSQ codebook size
    offset: int = 0  # LLM token id of <ecg_0000>; ids offset..offset+n_codes-1
    start_id: int = 0  # id of <ecg>
    end_id: int = 0  # id of </ecg>
    vocab_size: int = 0  # total rows of the embedding table after extension
    base_vocab_size: int = 0  # tokens of the text tokenizer before the ECG tokens were added (0 = unknown)
    bos_id: int | None = None  # prepended to every prompt when set (the base tokenizer adds one)
    eos_id: int | None = None  # ends every training answer; the runtime stops on it
    pad_id: int | None = None  # right/left padding in batches (masked out)

    def __post_init__(self) -> None:
        n = "VocabConfig"
        check_field(self.n_codes >= 2, n, "n_codes", self.n_codes, "must be >= 2")
        check_field(self.offset >= 0, n, "offset", self.offset, "must be >= 0")
        check_field(self.base_vocab_size >= 0, n, "base_vocab_size", self.base_vocab_size, "must be >= 0")
        for name in ("bos_id", "eos_id", "pad_id"):
            v = getattr(self, name)
            check_field(v is None or v >= 0, n, name, v, "None or >= 0")

    def index_to_id(self, index: int) -> int:
        return self.offset + index


@dataclasses.dataclass(frozen=True)
class GenerationConfig(ConfigMixin):
    """Decoding defaults stored with the model and used by the runtime."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy (deterministic)
    top_k: int = 1
    top_p: float = 1.0
    repeat_penalty: float = 1.0
    n_ctx: int = 1024  # context size of the runtime; prompts longer than this are refused
    max_question_chars: int = 1000

    def __post_init__(self) -> None:
        n = "GenerationConfig"
        check_field(self.max_new_tokens >= 1, n, "max_new_tokens", self.max_new_tokens, "must be >= 1")
        check_field(self.temperature >= 0, n, "temperature", self.temperature, "must be >= 0")
        check_field(self.n_ctx >= 64, n, "n_ctx", self.n_ctx, "must be >= 64")


# The two presets: the paper's 500 Hz / 313 tokens, and 100 Hz / 63 tokens for CPUs.
PRESETS: dict[str, tuple[PreprocessConfig, EncoderConfig, FSQConfig]] = {
    "500hz": (PreprocessConfig(fs_hz=500), EncoderConfig(n_samples=5000), FSQConfig()),
    # narrower widths (~0.3M parameters) keep CPU training practical at 100 Hz
    "100hz": (
        PreprocessConfig(fs_hz=100, highpass_hz=0.5),
        EncoderConfig(n_samples=1000, stem_channels=16, stage_channels=(16, 32, 32, 64), fused_channels=128),
        FSQConfig(),
    ),
}


def preset(name: str) -> tuple[PreprocessConfig, EncoderConfig, FSQConfig]:
    """The (preprocess, encoder, FSQ) configs of the preset ``name`` (a key of :data:`PRESETS`).

    Raises:
        ConfigError: an unknown name.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]
