"""Files a visitor uploads: the checks every handler makes, the readers, and the ledger of what
gradio's upload route stored.

Gradio's ``/gradio_api/upload`` route stores any file before an event asks for it; its guard
(:mod:`webapp.upload_guard`) records each stored file here, for whom and when, and asks
:func:`reserve` first:

- a request must say its length (``Content-Length``, not chunked) and be at most the largest
  file the page takes (:func:`max_request_bytes`) plus the form's framing: 413 otherwise;
- one client (address) uploads at most ``settings.UPLOAD_QUOTA_BYTES`` an hour (429), and the
  uploads no event has used yet take at most ``settings.UPLOAD_PENDING_BYTES`` together (507).
  Both count the requests still arriving at their declared length (:func:`reserve`), so uploads
  sent in parallel cannot pass either limit;
- an upload no event has used (:func:`check_upload` marks it used) within
  ``settings.UPLOAD_UNUSED_S`` seconds is deleted (:func:`sweep`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kd.models.archive import PICKLE_SUFFIXES
from webapp import settings
from webapp.gradio_files import remove_upload
from webapp.settings import MAX_UPLOAD_BYTES, UPLOAD_SUFFIXES

log = logging.getLogger("kd.app")

TEXT_HINT = "upload .tsv/.txt (english<TAB>translation per line, first line en<TAB>xx) or .jsonl"


def check_upload(
    path: str | None,
    what: str = "the uploaded file",
    *,
    suffixes: tuple[str, ...] = UPLOAD_SUFFIXES,
    limit: int | None = None,
    hint: str = TEXT_HINT,
) -> Path:
    """An uploaded file's path after checking that it exists, is small enough, has a known type.

    Args:
        path: the file gradio stored (``type="filepath"``).
        what: how to name the file in messages.
        suffixes: the accepted suffixes, lower case.
        limit: most bytes accepted (``MAX_UPLOAD_BYTES`` when None).
        hint: what to upload instead, for the wrong-type message.

    Raises:
        ValueError: no file, a vanished file, a file over the limit or of another type.
    """
    limit = MAX_UPLOAD_BYTES if limit is None else limit
    if not path:
        raise ValueError(f"no file uploaded; upload {what} first")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} is gone from the server; upload it again")
    claim(file)  # an event uses it: the sweep of unused uploads leaves it
    size = file.stat().st_size
    if size > limit:
        raise ValueError(f"{file.name} is {size / 2**20:.1f} MB; the limit is {limit // 2**20} MB")
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ValueError(
            f"{file.name}: unknown file type; a pickle file is never loaded here, because "
            f"unpickling can run code; {hint}"
        )
    if suffix not in suffixes:
        raise ValueError(f"{file.name}: unknown file type; {hint}")
    return file


def read_upload(file: Path, langs: list[str] | None = None):
    """Pairs of an uploaded file; a file without an ``en<TAB>xx`` header is taken to be in the
    chosen language when exactly one is chosen (as ``kd distill --data`` does)."""
    from kd.data.pairs import read_pairs

    try:
        return read_pairs(file)
    except ValueError as err:
        first = err
    if langs and len(langs) == 1:
        try:
            return read_pairs(file, langs[0])
        except ValueError:
            pass
    # The temporary folder's name means nothing to the visitor.
    raise ValueError(str(first).replace(str(file), file.name)) from None


# ---- the upload route ------------------------------------------------------------------------
@dataclass
class _Upload:
    client: str
    size: int
    at: float
    used: bool = False
    gone: bool = False  # its file was deleted; the record stays, for the client's quota

    @property
    def waiting(self) -> bool:
        """Its file is still on disk and no run has claimed it: what sweeps and evictions take."""
        return not self.used and not self.gone


_uploads: dict[str, _Upload] = {}  # resolved path -> what the upload route stored
_arriving: dict[int, _Upload] = {}  # ticket -> an admitted request still arriving (its length)
_tickets = itertools.count(1)
_uploads_lock = threading.Lock()
_clock = time.time
QUOTA_WINDOW_S = 3600.0


def max_request_bytes() -> int:
    """The largest upload request the route accepts: the largest file any of the page's
    upload fields takes, plus the multipart framing."""
    largest = max(settings.MAX_UPLOAD_BYTES, settings.MAX_STUDENT_ZIP_BYTES)
    return largest + settings.UPLOAD_FRAMING_BYTES


def _key(path: str | Path) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)


def claim(path: str | Path) -> None:
    """Mark an upload as used by one of the page's events (it is then not swept as unused)."""
    with _uploads_lock:
        record = _uploads.get(_key(path))
        if record is not None:
            record.used = True


def record_upload(client: str, paths: list[str], ticket: int | None = None) -> None:
    """Remember what the upload route stored, for whom and when; ``ticket``: the reservation
    (:func:`reserve`) the stored files replace."""
    now = _clock()
    with _uploads_lock:
        if ticket is not None:
            _arriving.pop(ticket, None)
        for path in paths:
            try:
                size = Path(path).stat().st_size
            except OSError:
                continue
            _uploads[_key(path)] = _Upload(client, size, now)


def settle(ticket: int, received: int) -> None:
    """An admitted request has ended without :func:`record_upload` (refused midway, cut off):
    its reservation becomes a record of the ``received`` bytes, kept for the client's quota
    only (its file is gone), so failing uploads on purpose is no way round the quota."""
    with _uploads_lock:
        record = _arriving.pop(ticket, None)
        if record is not None and received > 0:
            _uploads[f"received:{ticket}"] = _Upload(
                record.client, received, record.at, used=True, gone=True
            )


def sweep(now: float | None = None) -> int:
    """Delete the uploads no event used within ``settings.UPLOAD_UNUSED_S``; forget records
    older than an hour. Returns the number of files deleted."""
    now = _clock() if now is None else now
    stale = []
    with _uploads_lock:
        for key, record in list(_uploads.items()):
            age = now - record.at
            if age >= QUOTA_WINDOW_S:  # out of every client's quota window: forgotten
                del _uploads[key]
                if record.waiting:
                    stale.append(key)
            elif record.waiting and age >= settings.UPLOAD_UNUSED_S:
                stale.append(key)
                record.gone = True  # deleted, but still counted in its client's quota
    for key in stale:
        remove_upload(key)
    if stale:
        log.info("uploads: deleted %d that no event used", len(stale))
    return len(stale)


def evict_unused(needed: int) -> int:
    """Delete uploads no event has used, oldest first, until ``needed`` bytes are freed (a run
    needs the room: an upload nobody used is the cheapest thing to lose). The bytes freed."""
    with _uploads_lock:
        unused = sorted((r.at, key, r.size) for key, r in _uploads.items() if r.waiting)
    freed = 0
    for _at, key, size in unused:
        if freed >= needed:
            break
        with _uploads_lock:
            if key in _uploads:
                _uploads[key].gone = True  # its client's quota still counts it
        remove_upload(key)
        freed += size
    if freed:
        log.info("uploads: deleted %.0f MB not yet used, to make room for a run", freed / 2**20)
    return freed


def reserve(client: str, length: str | None) -> tuple[int, str] | int:
    """Admit an upload request of ``length`` bytes from ``client`` against the limits on uploads
    themselves, or refuse it: a ticket (the request is counted at its declared length in the
    client's quota and in the pending uploads until :func:`record_upload` or :func:`settle`),
    or (HTTP status, one line saying why not). Checked and counted under one lock: parallel
    requests see each other. The disk budget is checked after this, by
    :func:`webapp.upload_guard.admit`."""
    if length is None or not length.strip().isdigit():
        return 411, "an upload must state its Content-Length"
    size, cap = int(length), max_request_bytes()
    if size > cap:
        return 413, f"the upload is {size / 2**20:.1f} MB; the limit is {cap // 2**20} MB"
    sweep()
    now = _clock()
    with _uploads_lock:
        records = [*_uploads.values(), *_arriving.values()]
        recent = sum(r.size for r in records if r.client == client and now - r.at < QUOTA_WINDOW_S)
        pending = sum(r.size for r in records if r.waiting)
        if recent + size > settings.UPLOAD_QUOTA_BYTES:
            return 429, (
                f"you uploaded {recent / 2**20:.0f} MB in the last hour (uploads still arriving "
                f"included); the limit is {settings.UPLOAD_QUOTA_BYTES // 2**20} MB an hour"
            )
        if pending + size > settings.UPLOAD_PENDING_BYTES:
            return 507, "the server holds too many uploads not yet used; try again in a few minutes"
        ticket = next(_tickets)
        _arriving[ticket] = _Upload(client, size, now)
    return ticket
