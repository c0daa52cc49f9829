"""Records sent to ``diagecg serve``: uploaded files staged in a private folder, or a path inside the one
folder the server was allowed to read.

An upload is one record: a single file of any format ``diagecg.formats`` reads, a WFDB header with its
signal files (several files in one request), or one zip/tar archive of those (gzip, bzip2 and xz tars
too). Nothing the client names becomes a path unchecked:

* a file name keeps only its last component and must match ``SAFE_NAME`` (letters, digits, ``.``, ``_``,
  ``-``; no leading dot), because a WFDB header names its signal files and so their names must survive;
* an archive member must be a regular file (links and devices are refused) whose relative path has no
  absolute root, no ``..`` and only ``SAFE_NAME`` components; macOS ``__MACOSX`` and dot files are skipped;
* the bytes written are counted as they are written (never trusted from a header), against
  ``max_bytes`` in all, so a zip bomb stops at the limit; a compressed tar is decompressed as a stream
  whose every byte counts against the same limit, members skipped (dot files) included, so a bomb hidden
  in a skipped member stops there too;
* staging stops at a deadline (the request's timeout), checked at every chunk decompressed or written;
* ``allowed_record_path`` resolves symlinks before checking that a path lies inside the allowed folder.

Only the standard library is used here, so the rules can be tested without the ``serve`` extra.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from diagecg.errors import InputError, RecordNotFoundError
from diagecg.formats import find_records

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_DEPTH = 8  # folders inside an archive
_CHUNK = 1 << 16
_SKIPPED_FOLDERS = ("__MACOSX",)


class UploadError(InputError):
    """An upload that cannot be staged as one record; ``http_status`` is what the server answers."""

    http_status = 400


class UploadTooLargeError(UploadError):
    """The upload, or what its archive holds, is over the server's limit (HTTP 413)."""

    http_status = 413


class UploadTimeoutError(UploadError):
    """Staging the upload took longer than the request may (HTTP 504)."""

    http_status = 504


class PathNotAllowedError(InputError):
    """A record path outside the server's allowed folder, or none allowed at all (HTTP 403)."""

    http_status = 403


class PathNotFoundError(RecordNotFoundError):
    """Nothing at a record path inside the allowed folder (HTTP 404)."""

    http_status = 404


class RecordTooLongError(InputError):
    """A record longer than the server answers (HTTP 413)."""

    http_status = 413


@dataclass(frozen=True)
class StagedRecord:
    """A record ready to read: ``path`` on disk, ``name`` shown to the client (never the private
    folder), ``folder`` the private folder to delete afterwards (None for an allowed-folder path)."""

    path: Path
    name: str
    folder: Path | None = None

    def public_text(self, text: str) -> str:
        """``text`` (an error message) with the private folder's path removed."""
        if self.folder is None:
            return text
        for prefix in {str(self.folder.resolve()), str(self.folder)}:
            text = text.replace(prefix + os.sep, "").replace(prefix, "<upload>")
        return text

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def safe_file_name(name: str | None) -> str:
    """The last component of a client's file name, if it is a ``SAFE_NAME``.

    Raises:
        UploadError: no name, or one with other characters (the message says which are allowed).
    """
    base = re.split(r"[\\/]", name or "")[-1]
    if not SAFE_NAME.fullmatch(base):
        raise UploadError(
            f"upload file name {name!r} is not accepted: use letters, digits, '.', '_' and '-' "
            f"(at most 128, not starting with '.')"
        )
    return base


def _member_path(name: str, source: str) -> PurePosixPath | None:
    """The relative path of an archive member, None for one to skip (macOS metadata, dot files).

    Raises:
        UploadError: an absolute path, ``..``, a drive letter, or an unsafe component.
    """
    raw = name.replace("\\", "/")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise UploadError(f"{source}: member {name!r} has an absolute path; refused")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UploadError(f"{source}: member {name!r} leaves the archive ('..'); refused")
    if not parts or parts[0] in _SKIPPED_FOLDERS or any(p.startswith(".") for p in parts):
        return None
    if len(parts) > MAX_DEPTH + 1:
        raise UploadError(f"{source}: member {name!r} is nested deeper than {MAX_DEPTH} folders")
    for part in parts:
        if not SAFE_NAME.fullmatch(part):
            raise UploadError(
                f"{source}: member {name!r} has a name that is not accepted (letters, digits, "
                f"'.', '_' and '-')"
            )
    return PurePosixPath(*parts)


class _Budget:
    """Bytes and files still allowed for one upload, and the deadline (``time.monotonic()``) of staging."""

    def __init__(self, max_bytes: int, max_files: int, deadline: float | None = None) -> None:
        self.bytes_left = max_bytes
        self.files_left = max_files
        self.max_bytes, self.max_files = max_bytes, max_files
        self.deadline = deadline

    def check_time(self, what: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise UploadTimeoutError(f"{what}: staging the upload took longer than the server's timeout")

    def copy(self, src: IO[bytes], dst: Path, what: str) -> None:
        self.files_left -= 1
        if self.files_left < 0:
            raise UploadError(f"{what}: more than {self.max_files} files in one upload")
        dst.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a second member of the same name never overwrites the first
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                self.check_time(what)
                self.bytes_left -= len(chunk)
                if self.bytes_left < 0:
                    raise UploadTooLargeError(
                        f"{what}: the upload holds more than {self.max_bytes} bytes (the server's limit)"
                    )
                out.write(chunk)


class _CountedStream(io.RawIOBase):
    """A decompressing stream read through a budget: every byte it yields counts (archive headers and
    skipped members too), and each read checks the deadline."""

    def __init__(self, inner: BinaryIO | io.BufferedIOBase, limit: int, budget: _Budget, what: str) -> None:
        self.inner, self.left, self.limit, self.budget, self.what = inner, limit, limit, budget, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self.budget.check_time(self.what)
        data = self.inner.read(min(len(buffer), _CHUNK))
        self.left -= len(data)
        if self.left < 0:
            raise UploadTooLargeError(
                f"{self.what}: the archive decompresses to more than {self.limit} "
                f"bytes (the server's limit, skipped members included)"
            )
        buffer[: len(data)] = data
        return len(data)


def archive_kind(head: bytes) -> str | None:
    """``"zip"`` or ``"tar"`` (plain or compressed) from a file's first 512 bytes, else None."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if (
        head[:2] == b"\x1f\x8b"
        or head[:3] == b"BZh"
        or head[:6] == b"\xfd7zXZ\x00"
        or head[257:262] == b"ustar"
    ):
        return "tar"
    return None


def _extract_zip(src: BinaryIO, dest: Path, budget: _Budget, source: str) -> None:
    try:
        archive = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as e:
        raise UploadError(f"{source}: not a readable zip archive ({e})") from None
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            rel = _member_path(info.filename, source)
            if rel is None:
                continue
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix mode recorded (a plain file)
            if kind and kind != stat.S_IFREG:
                raise UploadError(
                    f"{source}: member {info.filename!r} is not a regular file (a link?); refused"
                )
            try:
                with archive.open(info) as member:
                    budget.copy(member, dest / rel, source)
            except FileExistsError:
                raise UploadError(f"{source}: member {info.filename!r} appears twice") from None
            except UploadError:
                raise
            except (
                zipfile.BadZipFile,
                zlib.error,
                RuntimeError,
                NotImplementedError,
                EOFError,
                OSError,
                ValueError,
                lzma.LZMAError,
            ) as e:  # a corrupt deflate stream raises zlib.error
                raise UploadError(f"{source}: member {info.filename!r} cannot be extracted ({e})") from None


def _decompressed(src: BinaryIO) -> BinaryIO | io.BufferedIOBase:
    """The tar stream inside ``src``: gunzipped, bunzipped or unxz'd as it is read, or ``src`` itself."""
    head = src.read(6)
    src.seek(0)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=src, mode="rb")
    if head[:3] == b"BZh":
        return bz2.BZ2File(src, mode="rb")
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(src, mode="rb")
    return src


def _extract_tar(src: BinaryIO, dest: Path, budget: _Budget, source: str) -> None:
    # read as a stream ("r|"), never seeking: skipping a member reads (and counts) its bytes too
    limit = budget.max_bytes + tarfile.BLOCKSIZE * (2 * budget.max_files + 64)  # + headers and padding
    stream = io.BufferedReader(_CountedStream(_decompressed(src), limit, budget, source), _CHUNK)
    try:
        archive = tarfile.open(fileobj=stream, mode="r|")
    except UploadError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as e:
        raise UploadError(f"{source}: not a readable tar archive ({e})") from None
    with archive:
        try:
            for member in archive:
                if member.isdir():
                    continue
                if not member.isreg():
                    raise UploadError(
                        f"{source}: member {member.name!r} is not a regular file (a link or device); refused"
                    )
                rel = _member_path(member.name, source)
                if rel is None:
                    continue
                data = archive.extractfile(member)
                assert data is not None, "a regular tar member always has data"
                try:
                    budget.copy(data, dest / rel, source)
                except FileExistsError:
                    raise UploadError(f"{source}: member {member.name!r} appears twice") from None
        except UploadError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError) as e:
            raise UploadError(f"{source}: the tar archive is damaged ({e})") from None


def stage_upload(
    files: Sequence[tuple[str | None, BinaryIO]],
    folder: Path,
    *,
    max_bytes: int,
    max_files: int,
    deadline: float | None = None,
) -> StagedRecord:
    """Write an upload into ``folder`` (empty, private) and find its one record.

    Args:
        files: (client file name, readable binary stream) per uploaded file.
        folder: where to write; deleted by ``StagedRecord.cleanup``, also when this raises.
        max_bytes: bytes that may be written in all (archives: after extraction), and decompressed in all
            (a compressed tar's whole stream).
        max_files: files that may be written in all.
        deadline: ``time.monotonic()`` by which staging must end; None = no deadline.

    Raises:
        UploadError: no file, a bad name or archive, or not exactly one record in the upload.
        UploadTooLargeError: over ``max_bytes``.
        UploadTimeoutError: past ``deadline``.
    """
    try:
        return _stage(files, folder, _Budget(max_bytes, max_files, deadline))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _stage(files: Sequence[tuple[str | None, BinaryIO]], folder: Path, budget: _Budget) -> StagedRecord:
    if not files:
        raise UploadError("no file uploaded: send the record's files (or one zip/tar of them) as 'files'")
    names = [safe_file_name(name) for name, _ in files]
    heads = []
    for _, stream in files:
        heads.append(stream.read(512))
        stream.seek(0)
    kinds = [archive_kind(h) for h in heads]
    if any(kinds) and len(files) > 1:
        raise UploadError("send either one archive or the record's files, not both")
    if kinds[0] == "zip":
        _extract_zip(files[0][1], folder, budget, names[0])
    elif kinds[0] == "tar":
        _extract_tar(files[0][1], folder, budget, names[0])
    else:
        if len(set(names)) < len(names):
            raise UploadError(f"the same file name is uploaded twice: {sorted(names)}")
        for name, (_, stream) in zip(names, files, strict=True):
            budget.copy(stream, folder / name, name)
    written = sorted(p for p in folder.rglob("*") if p.is_file())
    records = find_records(folder)
    if len(records) > 1:
        listed = ", ".join(p.relative_to(folder).as_posix() for p in records[:5])
        raise UploadError(f"the upload holds {len(records)} records ({listed}); send one record per request")
    if records:
        path = records[0]
    elif len(written) == 1:  # no known format: reading it says why, as `diagecg infer` would
        path = written[0]
    else:
        raise UploadError(
            "the upload holds no ECG record (a WFDB .hea with its signal files, DICOM, HL7 "
            "aECG, GE MUSE XML, EDF, Philips XML)"
        )
    return StagedRecord(path=path, name=path.relative_to(folder).as_posix(), folder=folder)


def allowed_record_path(path: str, allowed: Path | None) -> StagedRecord:
    """A record path a client named, if it lies inside ``allowed`` once symlinks are resolved.

    Args:
        path: absolute, or relative to ``allowed``.
        allowed: the folder given to ``diagecg serve --allow-folder``; None refuses every path.

    Raises:
        PathNotAllowedError: no folder allowed, or the path resolves outside it.
        PathNotFoundError: nothing there.
        UploadError: a folder instead of a record.
    """
    if allowed is None:
        raise PathNotAllowedError(
            "this server reads no paths (start it with --allow-folder DIR); upload the record's files instead"
        )
    if "\x00" in path or not path.strip():
        raise UploadError(f"record path {path!r} is not a path")
    root = allowed.resolve()
    candidate = Path(path) if Path(path).is_absolute() else root / path
    try:
        resolved = candidate.resolve()  # follows every symlink: an escape shows as a path outside root
        if not resolved.is_relative_to(root):
            raise PathNotAllowedError(
                f"record path {path[:200]!r} is outside the folder this server may read"
            )
        exists = resolved.exists()
    except OSError as e:  # a name over 255 bytes, a symlink loop...
        raise UploadError(f"record path {path[:200]!r} is not a usable path ({e.strerror or e})") from None
    if not exists:
        raise PathNotFoundError(f"record {path[:200]!r} not found in the allowed folder")
    if resolved.is_dir():
        raise UploadError(f"record path {path!r} is a folder; name one record (e.g. its .hea)")
    return StagedRecord(path=resolved, name=str(resolved))
