"""Where the project keeps its caches, and how it writes files without ever leaving half of one.

Every file the project writes goes through :func:`atomic_write_bytes` (or one of its wrappers):
the bytes land in a temporary file in the same directory, are flushed to disk, and only then
renamed over the target. A crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir(*parts: str) -> Path:
    """The project's cache directory (``$KD_CACHE`` or ``~/.cache/multilingual-kd``), created.

    Example:
        >>> cache_dir("models").name
        'models'
    """
    root = Path(os.environ.get("KD_CACHE") or Path.home() / ".cache" / "multilingual-kd")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _explain_os_error(path: Path, err: OSError) -> ValueError:
    if err.errno == errno.ENOSPC:
        return ValueError(f"{path}: the disk is full; free some space or choose another --out")
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return ValueError(f"{path}: cannot write here ({err.strerror}); choose another directory")
    return ValueError(f"{path}: cannot write ({err.strerror})")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Raises:
        ValueError: the directory is read-only, missing permissions, or the disk is full.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _explain_os_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _explain_os_error(path, err) from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write an object as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_npy(path: str | Path, array) -> None:
    """Write a numpy array as a ``.npy`` file atomically."""
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_directory(path: str | Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when the block ends.

    If the block raises, the temporary directory is removed and ``path`` is untouched. An
    existing ``path`` is replaced only after the new one is complete; its entries named in
    ``keep`` (e.g. a training checkpoint) are carried over into the new one.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_directory(root / "model") as tmp:
        ...     _ = (tmp / "a.txt").write_text("x")
        >>> (root / "model" / "a.txt").read_text()
        'x'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise _explain_os_error(path, err) from None
    try:
        yield tmp
        old = None
        for name in keep:
            if (path / name).exists() and not (tmp / name).exists():
                os.replace(path / name, tmp / name)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _explain_os_error(path, err) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
