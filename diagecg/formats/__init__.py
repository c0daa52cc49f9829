"""ECG file formats: which one a file is (from its content), and one reader per format.

Every reader returns the same validated :class:`~diagecg.types.EcgRecord` through
:func:`diagecg.record.record_from_array` (float32 mV, the 12 leads in canonical order, the same checks
for every format); it converts the file's digital values with the file's own gain, baseline and units
and refuses a file that leaves any of them unstated. ``diagecg.io.read_record`` calls
:func:`detect_format` and then :func:`read`, so the CLI, the pipeline and the API accept every format
below. Readers import this package's helpers and ``diagecg.record``, never ``diagecg.io``: the path
from a file to a record runs one way.

=========  =============================================  ==========================  ================
format     what it is                                     detected by                 reader (extra)
=========  =============================================  ==========================  ================
wfdb       PhysioNet WFDB ``.hea`` + ``.dat``/``.mat``    a ``.hea`` header           scipy for .mat (``mat``)
dicom      DICOM 12-lead / General ECG waveform           ``DICM`` at byte 128        pydicom (``dicom``)
hl7aecg    HL7 v3 annotated ECG (FDA submissions)         XML root ``AnnotatedECG``   stdlib XML
muse       GE MUSE / MAC resting ECG XML                  XML root ``RestingECG``     stdlib XML
edf        EDF / EDF+ (European Data Format)              ``0`` + 7 blanks at byte 0  edfio (``edf``)
philips    Philips SierraECG / PhilipsECG resting XML     XML ``<restingecgdata>``    sierraecg (``philips``)
=========  =============================================  ==========================  ================

Files of formats without a maintained reader (GE CardioSoft XML, SCP-ECG, BDF) are named and refused.
Reader modules import their optional dependency only when a file of that format is read
(:func:`import_optional`).
"""

from __future__ import annotations

import importlib
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from diagecg.errors import HeaderError, RecordError, RecordNotFoundError, SignalFileError
from diagecg.types import PATIENT_LIMITS

if TYPE_CHECKING:
    from diagecg.config import QualityConfig
    from diagecg.types import EcgRecord

MAX_FILE_BYTES = 256 << 20  # a 10 s 12-lead file is well under 10 MB; a 1 h 1 kHz DICOM ~90 MB
_SNIFF_BYTES = 4096

# format -> module whose ``read(path, *, quality)`` reads it
READERS: dict[str, str] = {
    "wfdb": "diagecg.formats.wfdb",
    "dicom": "diagecg.formats.dicom",
    "hl7aecg": "diagecg.formats.aecg",
    "muse": "diagecg.formats.muse",
    "edf": "diagecg.formats.edf",
    "philips": "diagecg.formats.philips",
}
FORMAT_NAMES: tuple[str, ...] = tuple(READERS)

# XML root element (namespace dropped) -> format
_XML_ROOTS: dict[str, str] = {"AnnotatedECG": "hl7aecg", "RestingECG": "muse", "restingecgdata": "philips"}
# recognised but not read: root / signature -> why
_UNSUPPORTED_XML: dict[str, str] = {
    "CardiologyXML": "GE CardioSoft / CASE XML: no maintained open reader; export DICOM or HL7 aECG "
    "from CardioSoft instead",
}
_UNSUPPORTED_SUFFIX: dict[str, str] = {
    ".scp": "SCP-ECG (EN 1064): no maintained open reader; export DICOM or HL7 aECG instead",
}
_SUPPORTED_TEXT = "WFDB (.hea), DICOM, HL7 aECG XML, GE MUSE XML, EDF/EDF+, Philips XML"


def import_optional(module: str, extra: str, what: str, source: str) -> ModuleType:
    """Import a reader's optional dependency, or raise one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SignalFileError(
            f"{source}: reading {what} needs {module}: pip install 'diagecg[{extra}]'"
        ) from None


def check_file(path: Path) -> Path:
    """A regular file of at most ``MAX_FILE_BYTES`` (checked before anything is read)."""
    if not path.exists():
        raise RecordNotFoundError(f"ECG file {path} not found")
    if not path.is_file():
        raise RecordError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise SignalFileError(f"{path}: the file is empty")
    if size > MAX_FILE_BYTES:
        raise SignalFileError(
            f"{path}: {size} bytes is larger than any resting ECG file (limit {MAX_FILE_BYTES >> 20} MiB)"
        )
    return path


def plausible_patient_value(field: str, value: float, written: str, warnings: list[str]) -> float | None:
    """``value`` when it lies within ``PATIENT_LIMITS[field]``; else None and a warning quoting the file's
    text ``written`` (a unit mix-up or an anonymisation marker must not become a patient feature)."""
    low, high = PATIENT_LIMITS[field]
    if math.isfinite(value) and low <= value <= high:
        return value
    warnings.append(f"patient {field.split('_')[0]} {written!r} is outside [{low:g}, {high:g}]; ignored")
    return None


def parse_xml(path: Path, source: str) -> ET.Element:
    """The root element of an XML ECG file (expat: no entity expansion bombs, no external fetches);
    malformed XML is one ``SignalFileError`` line."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        raise SignalFileError(f"{source}: not well-formed XML ({e})") from None


def file_number(text: str, where: str, source: str) -> float:
    """A number the file states (a rate, a scale, a count): ``HeaderError`` naming ``where`` when the text
    is not a finite number, since a reader must not guess what the file meant."""
    try:
        value = float(text)
    except ValueError:
        raise HeaderError(f"{source}: {where} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise HeaderError(f"{source}: {where} is {text!r}, not a finite number")
    return value


def patient_number(text: str | None, where: str, warnings: list[str]) -> float | None:
    """A patient field's number as the file writes it: None when absent, and None with a warning naming
    ``where`` when the text is not a finite number (an anonymisation marker such as ``---``)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        warnings.append(f"{where} {text!r} is not a number; ignored")
        return None
    return value


WFDB_SIGNAL_SUFFIXES = (".dat", ".mat", ".xyz")  # read through their header, never on their own


def _wfdb_header(path: Path) -> Path | None:
    """The WFDB header a path names: the ``.hea`` itself, a signal file beside one, or the record path
    without suffix."""
    if path.suffix.lower() == ".hea":
        return path
    for candidate in (path.with_suffix(".hea"), path.with_name(path.name + ".hea")):
        if candidate.is_file() and (path.suffix.lower() in WFDB_SIGNAL_SUFFIXES or not path.exists()):
            return candidate
    return None


def _binary_format(head: bytes) -> str | None:
    """The format a file's first bytes sign: DICOM's ``DICM`` after the 128-byte preamble, EDF's version
    field ``0`` and seven blanks."""
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:8] == b"0       ":
        return "edf"
    return None


def _xml_head(head: bytes) -> bytes:
    """The first bytes of a possible XML file as UTF-8, BOM and leading blanks removed (Philips carts
    write UTF-16 with a BOM)."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        codec = "utf-16-le" if head[:2] == b"\xff\xfe" else "utf-16-be"
        head = head[2 : len(head) & ~1].decode(codec, errors="replace").encode()
    return head.lstrip(b"\xef\xbb\xbf \t\r\n")


def _xml_root(path: Path) -> str:
    """The local name of an XML file's root element (reads only up to it)."""
    try:
        for _, element in ET.iterparse(path, events=("start",)):
            return element.tag.rsplit("}", 1)[-1]
    except ET.ParseError as e:
        raise SignalFileError(f"{path}: starts like XML but is not well-formed XML ({e})") from None
    raise SignalFileError(f"{path}: an XML file without a root element")


def detect_format(path: str | Path) -> str:
    """The format of an ECG file (one of ``FORMAT_NAMES``), from its content; the suffix decides only
    between a WFDB record's files.

    Raises:
        RecordNotFoundError: nothing at ``path`` (and no WFDB header beside it).
        SignalFileError: a known but unsupported format, or content no reader recognises.
    """
    p = Path(path)
    if _wfdb_header(p) is not None:
        return "wfdb"
    check_file(p)
    with p.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    binary = _binary_format(head)
    if binary is not None:
        return binary
    if head[:8] == b"\xffBIOSEMI":
        raise SignalFileError(f"{p}: a BDF (BioSemi 24-bit) file; diagecg reads EDF/EDF+, not BDF")
    text = _xml_head(head)
    if text.startswith(b"<"):
        root = _xml_root(p)
        if root in _XML_ROOTS:
            return _XML_ROOTS[root]
        if root in _UNSUPPORTED_XML:
            raise SignalFileError(f"{p}: {_UNSUPPORTED_XML[root]}")
        raise SignalFileError(
            f"{p}: an XML file with root <{root}> is no ECG format diagecg reads ({_SUPPORTED_TEXT})"
        )
    if p.suffix.lower() in _UNSUPPORTED_SUFFIX:
        raise SignalFileError(f"{p}: {_UNSUPPORTED_SUFFIX[p.suffix.lower()]}")
    raise SignalFileError(
        f"{p}: not an ECG format diagecg recognises ({_SUPPORTED_TEXT}); first bytes {head[:16]!r}"
    )


def read(path: str | Path, fmt: str, *, quality: QualityConfig | None = None) -> EcgRecord:
    """Read ``path`` with the reader of ``fmt`` (one of ``FORMAT_NAMES``)."""
    if fmt not in READERS:
        raise ValueError(f"unknown ECG format {fmt!r}; known: {list(FORMAT_NAMES)}")
    module = importlib.import_module(READERS[fmt])
    if fmt == "wfdb":  # a record is a header plus signal files: the reader finds and checks each of them
        wfdb_record: EcgRecord = module.read(path, quality=quality)
        return wfdb_record
    # a file's scale can overflow float64 (1e300 x a sample): the inf is refused by record_from_array with
    # the reason, not printed as numpy's RuntimeWarning on stderr
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        record: EcgRecord = module.read(check_file(Path(path)), quality=quality)
    return record


def find_records(folder: str | Path) -> list[Path]:
    """Every ECG record below ``folder`` (recursively, sorted): each WFDB header, and each other file
    whose content is a format diagecg reads (DICOM files often have no suffix, so content decides).

    Files of no ECG format (notes, images, a WFDB record's signal files) are skipped; a file that starts
    like a supported format but is damaged is kept, so that reading it reports why.
    """
    found: list[Path] = []
    for p in sorted(Path(folder).rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = p.suffix.lower()
        if suffix == ".hea":
            found.append(p)
        elif suffix not in WFDB_SIGNAL_SUFFIXES and _sniff(p):
            found.append(p)
    return found


def _sniff(path: Path) -> bool:
    """Whether ``path`` looks like a non-WFDB ECG file (by its first bytes; damaged ones included)."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    if _binary_format(head) is not None:
        return True
    text = _xml_head(head)
    if text.startswith(b"<"):
        return any(root.encode() in text for root in _XML_ROOTS)
    return False
