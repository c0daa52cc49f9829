"""Read a WFDB record (``.hea`` + ``.dat``/``.xyz``..., https://physionet.org/physiotools/wag/header-5.htm
and signal-5.htm) or a PhysioNet/CinC Challenge 2020/2021 record (a WFDB header whose signal file is a
MATLAB ``.mat`` holding ``val``; https://physionet.org/content/challenge-2021/).

The header is parsed by ``diagecg.header`` and the samples decoded here rather than by ``wfdb``: wfdb
silently assumes 250 Hz when the rate is missing and a gain of 200 when it is missing, fails with a bare
reshape error on a truncated file and tries to allocate whatever length the header declares. Everything
is checked before any sample is read: rate, gains, units, that every signal file stays inside the record
folder and that its size matches the declared length. No resampling happens here (see ``diagecg.preprocess``).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from diagecg.config import QualityConfig
from diagecg.errors import HeaderError, RecordNotFoundError, SignalFileError
from diagecg.formats import WFDB_SIGNAL_SUFFIXES
from diagecg.header import SignalSpec, WfdbHeader, parse_patient_comments, parse_wfdb_header
from diagecg.record import F32_MAX_MV, MAX_RECORD_SAMPLES, UNITS_TO_MV, check_rate, record_from_array
from diagecg.types import EcgRecord

MAX_HEADER_BYTES = 1 << 20  # a WFDB header is a few kB; refuse to parse anything this large


@dataclass(frozen=True)
class _Format:
    bytes_per_sample: Fraction
    invalid: int  # WFDB's "invalid sample" value of this format; read as NaN


# WFDB storage formats read here (signal-5). 8 (first differences), 310/311 and FLAC (5xx) are refused.
FORMATS: dict[str, _Format] = {
    "80": _Format(Fraction(1), -128),
    "16": _Format(Fraction(2), -32768),
    "61": _Format(Fraction(2), -32768),
    "160": _Format(Fraction(2), -32768),
    "212": _Format(Fraction(3, 2), -2048),
    "24": _Format(Fraction(3), -(1 << 23)),
    "32": _Format(Fraction(4), -(1 << 31)),
}


# --- signal files ---------------------------------------------------------------------------------------


def _safe_signal_path(folder: Path, name: str, source: str) -> Path:
    """``folder / name``, refusing names that leave the record folder."""
    if name == "~":
        raise SignalFileError(f"{source}: null signal file '~' is not supported")
    if "\x00" in name:
        raise SignalFileError(f"{source}: signal file name {name!r} contains a NUL byte")
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise SignalFileError(
            f"{source}: signal file name {name!r} is an absolute path; it must be a "
            f"file inside the record folder"
        )
    if ".." in re.split(r"[\\/]", name):
        raise SignalFileError(f"{source}: signal file name {name!r} leaves the record folder ('..')")
    path = folder / candidate
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise SignalFileError(
            f"{source}: signal file {name!r} resolves to {path.resolve()}, outside the "
            f"record folder {root} (symlink?)"
        )
    if not path.is_file():
        raise RecordNotFoundError(f"{source}: signal file {path} not found")
    return path


def _expected_bytes(fmt: str, n_values: int) -> int:
    return math.ceil(FORMATS[fmt].bytes_per_sample * n_values)


def _decode(fmt: str, raw: np.ndarray, n_values: int) -> np.ndarray:
    """Raw bytes (uint8) -> n_values int64 digital samples."""
    if fmt == "80":
        out = raw[:n_values].astype(np.int64) - 128
    elif fmt == "16":
        out = raw[: 2 * n_values].view("<i2").astype(np.int64)
    elif fmt == "61":
        out = raw[: 2 * n_values].view(">i2").astype(np.int64)
    elif fmt == "160":
        out = raw[: 2 * n_values].view("<u2").astype(np.int64) - 32768
    elif fmt == "24":
        b = raw[: 3 * n_values].reshape(-1, 3).astype(np.int64)
        out = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        out = np.where(out >= 1 << 23, out - (1 << 24), out)
    elif fmt == "32":
        out = raw[: 4 * n_values].view("<i4").astype(np.int64)
    elif fmt == "212":
        # two 12-bit samples in 3 bytes: low byte, then the shared nibbles (sample 0 low, sample 1 high)
        n_pairs = -(-n_values // 2)
        flat = np.zeros(3 * n_pairs, dtype=np.int64)
        flat[: min(raw.size, flat.size)] = raw[: flat.size]
        b = flat.reshape(-1, 3)
        out = np.empty(2 * n_pairs, dtype=np.int64)
        out[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        out[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        out = np.where(out >= 1 << 11, out - (1 << 12), out)[:n_values]
    else:  # pragma: no cover - guarded by FORMATS
        raise AssertionError(fmt)
    return out


def _is_mat_v4(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(128)
    return not head.startswith(b"MATLAB")  # v5 / v7.3 files start with a text banner


_MAT5_HEADER = 128
_MI_MATRIX, _MI_COMPRESSED, _MI_INT32 = 14, 15, 5
_MAT5_HEAD_BYTES = 1024  # a variable's flags, dimensions and name fit in far less


def _mat5_shapes(path: Path, source: str) -> dict[str, tuple[int, ...]]:
    """The name and dimensions of each variable of a MATLAB v5 file, read from the element headers: a
    compressed variable has only its first ``_MAT5_HEAD_BYTES`` inflated (MATLAB 5 MAT-file format,
    "Data Element Format"). Variables this cannot parse are left out (``loadmat`` says why later)."""
    out: dict[str, tuple[int, ...]] = {}
    with path.open("rb") as f:
        header = f.read(_MAT5_HEADER)
        if len(header) < _MAT5_HEADER:
            raise SignalFileError(f"{source}: MATLAB file {path.name} is shorter than its 128-byte header")
        order = "<" if header[126:128] == b"IM" else ">"
        size = path.stat().st_size
        while f.tell() + 8 <= size:
            kind, n_bytes = struct.unpack(order + "II", f.read(8))
            start = f.tell()
            if kind == _MI_COMPRESSED:
                inflater = zlib.decompressobj()
                try:
                    head = inflater.decompress(f.read(min(n_bytes, 4096)), _MAT5_HEAD_BYTES)
                except zlib.error as e:
                    raise SignalFileError(
                        f"{source}: MATLAB file {path.name}: a compressed variable is corrupt ({e})"
                    ) from None
            else:
                head = struct.pack(order + "II", kind, n_bytes) + f.read(min(n_bytes, _MAT5_HEAD_BYTES))
            parsed = _mat5_matrix_head(head, order)
            if parsed is not None:
                out[parsed[0]] = parsed[1]
            f.seek(start + n_bytes + (-n_bytes % 8 if kind != _MI_COMPRESSED else 0))
    return out


def _mat5_matrix_head(head: bytes, order: str) -> tuple[str, tuple[int, ...]] | None:
    """(name, dimensions) of a miMATRIX element that starts ``head``, or None."""

    def element(at: int) -> tuple[int, bytes, int] | None:  # (type, data, offset of the next element)
        if at + 8 > len(head):
            return None
        word, n = struct.unpack(order + "II", head[at : at + 8])
        if word >> 16:  # the small data element format: type and size in one word, data in the next 4
            return word & 0xFFFF, head[at + 4 : at + 4 + (word >> 16)], at + 8
        end = at + 8 + n
        return word, head[at + 8 : end], end + (-n % 8)

    try:
        matrix = element(0)
        if matrix is None or matrix[0] != _MI_MATRIX:
            return None
        flags = element(8)
        dims = element(flags[2]) if flags is not None else None
        name = element(dims[2]) if dims is not None else None
        if dims is None or name is None or dims[0] != _MI_INT32 or len(dims[1]) % 4:
            return None
        shape = struct.unpack(order + f"{len(dims[1]) // 4}i", dims[1])
        return name[1].decode("latin-1").rstrip("\x00"), tuple(int(d) for d in shape)
    except (struct.error, UnicodeDecodeError):
        return None


def _read_mat(path: Path, n_ch: int, n_samples: int, source: str) -> np.ndarray:
    """A Challenge ``.mat`` file's ``val`` array, shape (n_ch, n_samples)."""
    try:
        import scipy.io  # only Challenge records need it: an optional extra
    except ImportError:
        raise SignalFileError(
            f"{source}: reading MATLAB signal files (PhysioNet Challenge records) needs "
            f"scipy: pip install 'diagecg[mat]'"
        ) from None
    # the shape first, from the variable's header: a compressed 'val' is not inflated before it is known
    # (scipy's whosmat inflates it all: a 120 kB file of 120 MB of samples peaked at 270 MB)
    declared = {} if _is_mat_v4(path) else _mat5_shapes(path, source)
    if "val" in declared and tuple(declared["val"]) != (n_ch, n_samples):
        raise SignalFileError(
            f"{source}: {path.name} holds 'val' of shape {tuple(declared['val'])}; the "
            f"header declares {n_ch} signals x {n_samples} samples"
        )
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["val"])
    except Exception as e:  # scipy raises many types on a corrupt file
        raise SignalFileError(f"{source}: cannot read MATLAB file {path.name}: {e}") from e
    if "val" not in mat:
        raise SignalFileError(f"{source}: MATLAB file {path.name} has no 'val' array")
    val = np.asarray(mat["val"])
    if val.shape != (n_ch, n_samples):
        raise SignalFileError(
            f"{source}: {path.name} holds 'val' of shape {val.shape}; the header declares "
            f"{n_ch} signals x {n_samples} samples"
        )
    if not (np.issubdtype(val.dtype, np.integer) or np.issubdtype(val.dtype, np.floating)):
        raise SignalFileError(f"{source}: {path.name} 'val' has dtype {val.dtype}, not numeric")
    return val


def _read_signals(hea: Path, header: WfdbHeader, source: str) -> tuple[np.ndarray, list[str]]:
    """Digital samples -> physical values in mV, float32 (signals, samples), plus warnings.

    Every file is checked (location, format, size) before any is read.
    """
    warnings: list[str] = []
    folder = hea.parent
    groups: dict[str, list[int]] = {}  # file name -> signal indices stored in it, in order
    for i, s in enumerate(header.signals):
        groups.setdefault(s.file_name, []).append(i)
    n = header.n_samples
    plans = []
    for name, idx in groups.items():
        path = _safe_signal_path(folder, name, source)
        specs = [header.signals[i] for i in idx]
        fmts = {s.fmt for s in specs}
        offsets = {s.byte_offset for s in specs}
        if len(fmts) > 1 or len(offsets) > 1:
            raise SignalFileError(f"{source}: signals in {name} mix formats/offsets {sorted(fmts)}")
        fmt, offset = specs[0].fmt, specs[0].byte_offset
        is_mat = path.suffix.lower() == ".mat"
        if fmt not in FORMATS:
            raise SignalFileError(
                f"{source}: WFDB format {fmt} of {name} is not supported "
                f"(supported: {', '.join(FORMATS)}); convert the record with wfdb first"
            )
        size = path.stat().st_size
        per_frame = FORMATS[fmt].bytes_per_sample * len(idx)
        if n is None:
            if is_mat:
                raise HeaderError(f"{source}: the record line lacks the number of samples")
            n = int((size - offset) / per_frame)
            warnings.append(
                f"the header does not declare the number of samples; {n} inferred from the size of {name}"
            )
        plans.append((name, path, idx, fmt, offset, size, is_mat))
    assert n is not None
    if n == 0:
        raise HeaderError(f"{source}: the header declares 0 samples")
    if n * len(header.signals) > MAX_RECORD_SAMPLES:
        raise SignalFileError(
            f"{source}: declares {n} samples x {len(header.signals)} signals, more than "
            f"diagecg reads ({MAX_RECORD_SAMPLES} values); crop the record first"
        )
    for name, path, idx, fmt, offset, size, is_mat in plans:
        if is_mat and not _is_mat_v4(path):
            continue  # v5 .mat may be compressed: its shape is checked after loading
        expected = offset + _expected_bytes(fmt, n * len(idx))
        if size < expected:
            raise SignalFileError(
                f"{source}: signal file {name} is truncated: {size} bytes, but {n} samples x {len(idx)} "
                f"signals of format {fmt} (+{offset} byte offset) need {expected} bytes"
            )
        extra = size - expected
        if extra >= FORMATS[fmt].bytes_per_sample * len(idx) and not is_mat:
            warnings.append(f"{name} holds {extra} bytes beyond the {n} declared samples; they are ignored")
    out = np.empty((len(header.signals), n), dtype=np.float32)  # (signals, samples), mV
    bad_checksum: list[str] = []
    for _name, path, idx, fmt, offset, _size, is_mat in plans:
        if is_mat:
            digital = _read_mat(path, len(idx), n, source)  # (channels in file, samples)
        else:
            count = _expected_bytes(fmt, n * len(idx))
            raw = np.fromfile(path, dtype=np.uint8, count=count, offset=offset)
            digital = _decode(fmt, raw, n * len(idx)).reshape(n, len(idx)).T  # (channels in file, samples)
        for row, i in enumerate(idx):
            spec = header.signals[i]
            d = digital[row]
            integer = np.issubdtype(d.dtype, np.integer)
            invalid = (d == FORMATS[fmt].invalid) if integer else None  # float .mat: NaN stays NaN
            if spec.checksum is not None and integer:
                if (int(np.sum(d, dtype=np.int64)) - spec.checksum) % 65536 != 0:
                    bad_checksum.append(spec.description or str(i))
            with np.errstate(over="ignore", invalid="ignore"):  # refused below, not printed by numpy
                phys = (d.astype(np.float64) - spec.baseline) / spec.gain * _units_to_mv(spec, source)
                beyond = np.isinf(phys) | (np.abs(phys) > F32_MAX_MV)
            if beyond.any():
                raise SignalFileError(
                    f"{source}: signal {spec.description or i!r}: gain {spec.gain:g} "
                    f"adu/unit turns samples into values beyond float32 (|x| > "
                    f"{F32_MAX_MV:.3g} mV); the header's gain is wrong"
                )
            if invalid is not None and invalid.any():
                phys[invalid] = np.nan
            out[i] = phys
    if bad_checksum:
        warnings.append(f"checksum mismatch in signal(s) {', '.join(bad_checksum)}: the data may be corrupt")
    if any(s.units is None for s in header.signals):
        warnings.append("the header gives no units; WFDB's default, mV, was assumed")
    return out, warnings


def _units_to_mv(spec: SignalSpec, source: str) -> float:
    if spec.units is None:
        return 1.0  # the WFDB default (header-5); _read_signals adds a warning
    factor = UNITS_TO_MV.get(spec.units.strip().lower())
    if factor is None:
        raise HeaderError(
            f"{source}: signal {spec.description!r} has units {spec.units!r}, not a voltage "
            f"(known: mV, uV, V, nV)"
        )
    return factor


# --- the record -----------------------------------------------------------------------------------------


def header_path(path: str | Path) -> Path:
    """The ``.hea`` file of a record given as its header, a signal file, or the path without suffix."""
    p = Path(path)
    if p.suffix.lower() == ".hea":
        hea = p
    elif p.suffix.lower() in WFDB_SIGNAL_SUFFIXES:
        hea = p.with_suffix(".hea")
    else:
        hea = p.with_name(p.name + ".hea")
    if not hea.is_file():
        raise RecordNotFoundError(f"record header {hea} not found (from {str(path)!r})")
    return hea


def read_header(path: str | Path) -> WfdbHeader:
    """Parse a record's WFDB header (no signal is read)."""
    hea = header_path(path)
    size = hea.stat().st_size
    if size > MAX_HEADER_BYTES:
        raise HeaderError(f"{hea}: {size} bytes is too large for a WFDB header")
    return parse_wfdb_header(hea.read_bytes().decode("utf-8", errors="replace"), str(hea))


def read(path: str | Path, *, quality: QualityConfig | None = None) -> EcgRecord:
    """Read and validate one WFDB or Challenge record.

    Args:
        path: the record's ``.hea``, one of its signal files, or the record path without suffix.
        quality: thresholds of the signal checks; ``QualityConfig()`` when None.

    Raises:
        RecordNotFoundError: the header or a signal file does not exist.
        HeaderError: malformed header, missing/zero sampling rate, missing/zero gain, non-voltage units.
        SignalFileError: a signal file outside the record folder, truncated, or of an unsupported format.
        LeadError, SignalQualityError: from ``diagecg.record.record_from_array``.
    """
    hea = header_path(path)
    source = str(hea)
    header = read_header(hea)
    if header.fs_hz is None:
        raise HeaderError(
            f"{source}: the record line gives no sampling rate; refusing to guess (WFDB would assume 250 Hz)"
        )
    if not (math.isfinite(header.fs_hz) and header.fs_hz > 0):
        raise HeaderError(f"{source}: sampling rate {header.fs_hz:g} Hz must be > 0")
    check_rate(header.fs_hz, source, HeaderError)
    warnings: list[str] = []
    if header.record_name != hea.stem:
        warnings.append(f"the header names the record {header.record_name!r}, the file is {hea.name!r}")
    mv, signal_warnings = _read_signals(hea, header, source)
    patient, diagnoses, comment_warnings = parse_patient_comments(header.comments)
    names = [s.description for s in header.signals]
    return record_from_array(
        mv,
        header.fs_hz,
        names,
        units="mV",
        source=source,
        record_id=hea.stem,
        patient=patient,
        diagnoses=diagnoses,
        warnings=[*warnings, *signal_warnings, *comment_warnings],
        quality=quality,
    )
