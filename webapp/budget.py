"""The server's disk budget: what the visitors' runs, uploads and caches may take, and eviction.

Everything the app writes for visitors lives in two folders: the visitors' work folders under
``settings.WORK_ROOT`` (one per visitor: their runs and the zips handed out) and gradio's upload
folder (uploads, and gradio's copies of the zips it served). Together they stay under
``settings.DISK_BUDGET_BYTES``: before a new run folder is made (:func:`make_room`), the oldest
visitor folders that no run is using are deleted, with gradio's copies of their zips, until
the new run fits; an upload that does not fit is refused instead (it never deletes another
visitor's files). The caches of search indexes and teacher vectors are kept under their own
caps by :func:`prune_cache`, oldest file first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from webapp import settings
from webapp.gradio_files import served_copy, upload_folder
from webapp.uploads import evict_unused, sweep

log = logging.getLogger("kd.app")

RECENT_S = 120.0
"""A visitor folder written to this recently is never evicted (a zip being unpacked)."""

_busy: dict[str, int] = {}  # resolved visitor folder -> runs using it
_busy_lock = threading.Lock()
_room_lock = threading.Lock()
_in_flight = {"bytes": 0}  # admitted uploads still being written: counted as used
_in_flight_lock = threading.Lock()


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed); 0 if it is missing."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                total += st.st_size
    return total


def used_bytes() -> int:
    """What the app has written for visitors: their work folders and gradio's upload folder."""
    return folder_bytes(settings.WORK_ROOT) + folder_bytes(upload_folder())


@contextlib.contextmanager
def hold(folder: str | Path | None) -> Iterator[None]:
    """Mark a visitor folder as in use (a run writing to it): :func:`make_room` spares it."""
    key = str(Path(folder).resolve()) if folder else None
    if key:
        with _busy_lock:
            _busy[key] = _busy.get(key, 0) + 1
    try:
        yield
    finally:
        if key:
            with _busy_lock:
                _busy[key] -= 1
                if not _busy[key]:
                    del _busy[key]


def _newest_mtime(folder: Path) -> float:
    newest = 0.0
    for root, dirs, files in os.walk(folder):
        for name in [*files, *dirs]:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    with contextlib.suppress(OSError):
        newest = max(newest, folder.stat().st_mtime)
    return newest


def evictable(keep: tuple[str | Path, ...] = ()) -> list[Path]:
    """The visitor folders that may be deleted, oldest first: not in use by a run, not in
    ``keep``, not written to in the last :data:`RECENT_S` seconds."""
    root = settings.WORK_ROOT
    if not root.is_dir():
        return []
    kept = {str(Path(k).resolve()) for k in keep if k}
    with _busy_lock:
        busy = set(_busy)
    now = time.time()
    aged = []
    for folder in root.iterdir():
        if not folder.is_dir() or folder.is_symlink():
            continue
        key = str(folder.resolve())
        if key in busy or key in kept:
            continue
        mtime = _newest_mtime(folder)
        if now - mtime >= RECENT_S:
            aged.append((mtime, folder))
    return [folder for _, folder in sorted(aged)]


def evict(folder: Path) -> int:
    """Delete one visitor folder and gradio's copies of the zips in it; the bytes freed."""
    freed = folder_bytes(folder)
    for zipped in folder.rglob("*.zip"):
        copy = served_copy(zipped)
        if copy is not None:
            freed += folder_bytes(copy.parent)
            served_copy(zipped, delete=True)
    shutil.rmtree(folder, ignore_errors=True)
    log.info("disk budget: deleted %s (%.0f MB)", folder.name, freed / 2**20)
    return freed


def make_room(needed: int = 0, keep: tuple[str | Path, ...] = (), for_run: bool = False) -> None:
    """Make ``needed`` more bytes fit in the disk budget.

    Uploads that no event used in time go first (:func:`webapp.uploads.sweep`). Only for a run
    (``for_run``: one at a time, behind the training slot) are the oldest idle visitor folders
    deleted, then any upload no event has used; an upload never deletes another visitor's
    files (anyone can upload, so that would let one client delete everyone's runs).

    Raises:
        ValueError: it does not fit (for a run: runs in progress hold the rest): try later.
    """
    with _room_lock:
        sweep()
        budget = settings.DISK_BUDGET_BYTES
        used = used_bytes() + in_flight_bytes()
        if used + needed <= budget:
            return
        if for_run:
            for folder in evictable(keep):
                used -= evict(folder)
                if used + needed <= budget:
                    return
            used -= evict_unused(used + needed - budget)
            if used + needed <= budget:
                return
    raise ValueError(
        f"the server's disk budget ({budget // 2**20:,} MB) is taken by runs in progress and "
        "recent uploads; try again in a few minutes"
    )


def in_flight_bytes() -> int:
    """Bytes of the uploads admitted and still arriving: :func:`make_room` counts them as used."""
    return _in_flight["bytes"]


def admit_upload(size: int) -> None:
    """Check that an upload of ``size`` bytes fits, with the others still arriving and always
    one run besides (uploads alone never take the whole budget from the training slot), then
    count it as arriving until :func:`upload_written`. Only uploads no event used in time are
    deleted to make room; visitors' folders never are.

    Raises:
        ValueError: it does not fit (one line for the client).
    """
    with _in_flight_lock:
        make_room(size + settings.RUN_RESERVE_BYTES)
        _in_flight["bytes"] += size


def upload_written(size: int) -> None:
    """An admitted upload has finished arriving (stored or failed): no longer counted."""
    with _in_flight_lock:
        _in_flight["bytes"] = max(0, _in_flight["bytes"] - size)


def prune_cache(folder: Path, max_bytes: int, pattern: str = "*", keep=()) -> int:
    """Delete the oldest files matching ``pattern`` in ``folder`` (by last write or use) until
    the rest take at most ``max_bytes``; files in ``keep`` stay. An SQLite index goes with
    its ``-wal`` and ``-shm`` files. Returns the number of files deleted."""
    kept = {Path(k).resolve() for k in keep}
    groups: dict[Path, list[Path]] = {}
    for file in folder.glob(pattern):
        if not file.is_file() or file.is_symlink():
            continue
        main = file.with_name(file.name.removesuffix("-wal").removesuffix("-shm"))
        groups.setdefault(main, []).append(file)

    def stamp(main: Path) -> float:  # last written or last used (a reader sets atime)
        times = [max(f.stat().st_mtime, f.stat().st_atime) for f in groups[main] if f.exists()]
        return max(times, default=0.0)

    sizes = {main: sum(f.stat().st_size for f in files) for main, files in groups.items()}
    total = sum(sizes.values())
    deleted = 0
    for main in sorted(groups, key=stamp):
        if total <= max_bytes:
            break
        if main.resolve() in kept:
            continue
        for file in groups[main]:
            with contextlib.suppress(OSError):
                file.unlink()
                deleted += 1
        total -= sizes[main]
    return deleted
