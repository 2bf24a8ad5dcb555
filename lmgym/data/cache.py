"""On-disk cache of tokenised datasets and trained vocabularies.

Entries are folders of ``.npy`` arrays plus ``meta.json``, keyed by a fingerprint of
(the source file's content hash, the tokenizer, the settings). They are built in a
temporary folder and renamed into place, so a reader never sees half an entry; a file
lock makes concurrent builders in other processes wait and reuse the first one's work
instead of rebuilding. Arrays are memory-mapped on load, so many env processes share
one copy in the page cache.

The cache lives in ``$LMGYM_CACHE_DIR`` (default ``~/.cache/lmgym``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

CACHE_ENV = "LMGYM_CACHE_DIR"
#: Bump when the on-disk layout or any tokenisation logic changes.
CACHE_VERSION = 2

_digests: dict[tuple[str, int, int], str] = {}


def cache_root() -> Path:
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lmgym")
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoised per process by path, size and mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def array_digest(*arrays: Any) -> str:
    """A short SHA-256 of arrays' bytes (for cache keys over loaded data)."""
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:24]


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` all at once: ``write(file)`` fills a temporary file, then ``os.replace``.

    The temporary file sits in ``path``'s folder (created if needed) and is fsynced before
    the rename, so a reader (or a crash at any point) sees the old file or the new one,
    never half of one. The one implementation of atomic writes in lmgym and agents.

    :param path: the destination.
    :param write: called with the temporary file, opened ``"wb"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    :param path: the destination.
    :param data: the whole new content.
    """
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`).

    :param path: the destination.
    :param text: the whole new content.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def _load_entry(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
    return arrays, meta["meta"]


def cached_arrays(
    kind: str,
    key: str,
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return ``build()``'s arrays and metadata, from the cache when present.

    :param kind: a folder name grouping entries (e.g. ``"ner"``).
    :param key: the entry's fingerprint (see :func:`fingerprint`).
    :param build: computes ``(arrays, meta)``; ``meta`` must be JSON-serialisable.
    """
    folder = cache_root() / kind / key
    if (folder / "meta.json").is_file():
        try:
            return _load_entry(folder)
        except (OSError, ValueError, KeyError):
            pass  # damaged by hand: fall through and rebuild under the lock
    with locked(cache_root() / kind / f"{key}.lock"):
        if (folder / "meta.json").is_file():
            try:
                return _load_entry(folder)
            except (OSError, ValueError, KeyError):
                shutil.rmtree(folder, ignore_errors=True)
        arrays, meta = build()
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
        try:
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
            (tmp / "meta.json").write_text(json.dumps({"arrays": sorted(arrays), "meta": meta}))
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _load_entry(folder)
