"""Unpacked copies of packed shared data, in a per-user cache folder.

The shared data folder is read-only (in CI too), and ``ptbxl_full/`` ships its signals packed
(``records100.bin.xz``); its own ``unpack.py OUT_DIR`` writes them as standard WFDB. This module runs it
once per source into ``$DIAGECG_CACHE/<name>`` (default ``~/.cache/diagecg/<name>``):

* atomically: the script writes into a temporary folder beside the target, which is renamed into place
  only once the script has checked every record, so a crash or a concurrent run never leaves half a cache;
* with a marker (``source.json``) naming what was unpacked (size of each packed file, hash of the id
  list): a cache whose marker differs from the source is stale and is unpacked again.

Nothing is downloaded: the script reads only the files beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from diagecg.errors import DiagEcgError

logger = logging.getLogger(__name__)

CACHE_ENV = "DIAGECG_CACHE"  # environment variable naming the cache root
DEFAULT_CACHE = Path("~/.cache/diagecg")
CACHE_MARKER = "source.json"  # in the unpacked folder: what it was unpacked from


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$DIAGECG_CACHE``, else ``~/.cache/diagecg``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def source_fingerprint(source: Path, files: Sequence[str], hashed: Sequence[str]) -> dict[str, object]:
    """What identifies a packed source: the size of each of ``files`` and the sha256 of each of ``hashed``
    (small files, such as the id list)."""
    out: dict[str, object] = {"source": str(source.resolve())}
    for name in files:
        out[f"size:{name}"] = (source / name).stat().st_size
    for name in hashed:
        out[f"sha256:{name}"] = hashlib.sha256((source / name).read_bytes()).hexdigest()
    return out


def _read_marker(folder: Path) -> dict[str, object] | None:
    try:
        return json.loads((folder / CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def _same_source(marker: dict[str, object] | None, fingerprint: dict[str, object]) -> bool:
    # the source path may differ (a copy of the same data elsewhere); sizes and hashes must not
    return marker is not None and {k: v for k, v in marker.items() if k != "source"} == {
        k: v for k, v in fingerprint.items() if k != "source"
    }


def unpacked(
    source: str | Path,
    name: str,
    files: Sequence[str],
    hashed: Sequence[str] = (),
    script: str = "unpack.py",
    cache_dir: str | Path | None = None,
) -> Path:
    """The folder where ``source``'s ``script OUT_DIR`` has unpacked it, unpacking it first if needed.

    Args:
        source: the packed data folder (read-only; holds ``script`` and ``files``).
        name: sub-folder of the cache root for this source (e.g. ``"ptbxl_full"``).
        files: packed files whose sizes identify the source.
        hashed: small files whose sha256 identifies the source (e.g. the id list).
        script: the source's own unpacker, run as ``python script OUT_DIR``.
        cache_dir: cache root; None = ``$DIAGECG_CACHE`` or ``~/.cache/diagecg``.

    Returns:
        The unpacked folder (``cache_root/name``), complete and matching the source.

    Raises:
        FileNotFoundError: the script or a packed file is missing.
        DiagEcgError: the script failed (a damaged pack, a full disk); its last output is quoted.
    """
    src = Path(source)
    unpacker = src / script
    if not unpacker.is_file():
        raise FileNotFoundError(f"no unpacker {unpacker}")
    fingerprint = source_fingerprint(src, files, hashed)
    root = cache_root(cache_dir)
    target = root / name
    if _same_source(_read_marker(target), fingerprint):
        return target
    stale = target.exists()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    logger.info(
        "unpacking %s into %s (once; about 20 s)%s",
        src,
        target,
        " - the cached copy is stale" if stale else "",
    )
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, str(unpacker), str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DiagEcgError(f"{unpacker} {tmp} failed (exit {proc.returncode}): {' | '.join(tail)}")
        (tmp / CACHE_MARKER).write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
        if stale:  # move the old copy aside first: a rename cannot replace a non-empty folder
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=root))
            target.rename(old / name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:  # another process renamed its own complete copy into place first
            if not _same_source(_read_marker(target), fingerprint):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("unpacked %s in %.0f s", target, time.time() - t0)
    return target
