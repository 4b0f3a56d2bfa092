"""Checks and readers for files a visitor uploads, and the guard on gradio's upload route.

Gradio's ``/gradio_api/upload`` route stores any file before an event asks for it (the page
uploads a file as soon as it is picked). :class:`UploadGuard` sits in front of it:

- a request must say its length (``Content-Length``) and be at most the largest file the page
  takes (:func:`max_request_bytes`) plus the form's framing: 413 otherwise;
- one client (address) uploads at most ``settings.UPLOAD_QUOTA_BYTES`` an hour (429), the
  uploads no event has used yet take at most ``settings.UPLOAD_PENDING_BYTES`` together, and
  the upload must fit in the disk budget (:func:`webapp.budget.make_room`): 507 otherwise;
- an upload no event has used (:func:`check_upload` marks it used) within
  ``settings.UPLOAD_UNUSED_S`` seconds is deleted (:func:`sweep`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kd.archive import PICKLE_SUFFIXES
from webapp import settings
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
    from kd.data import read_pairs

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
_uploads_lock = threading.Lock()
_clock = time.time
QUOTA_WINDOW_S = 3600.0
_in_flight = {"bytes": 0}  # admitted uploads still being written: counted in the disk budget
_in_flight_lock = threading.Lock()


def in_flight_bytes() -> int:
    """Bytes of the uploads admitted and still arriving (:func:`webapp.budget.make_room`
    counts them as used)."""
    return _in_flight["bytes"]


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


def record_upload(client: str, paths: list[str]) -> None:
    """Remember what the upload route stored, for whom and when."""
    now = _clock()
    with _uploads_lock:
        for path in paths:
            try:
                size = Path(path).stat().st_size
            except OSError:
                continue
            _uploads[_key(path)] = _Upload(client, size, now)


def sweep(now: float | None = None) -> int:
    """Delete the uploads no event used within ``settings.UPLOAD_UNUSED_S``; forget records
    older than an hour. Returns the number of files deleted."""
    from webapp.session import remove_upload

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
    from webapp.session import remove_upload

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


def admit(client: str, length: str | None) -> tuple[int, str] | None:
    """Whether an upload request of ``length`` bytes from ``client`` may proceed: None, or
    (HTTP status, one line saying why not)."""
    if length is None or not length.strip().isdigit():
        return 411, "an upload must state its Content-Length"
    size, cap = int(length), max_request_bytes()
    if size > cap:
        return 413, f"the upload is {size / 2**20:.1f} MB; the limit is {cap // 2**20} MB"
    sweep()
    now = _clock()
    with _uploads_lock:
        recent = sum(
            r.size for r in _uploads.values() if r.client == client and now - r.at < QUOTA_WINDOW_S
        )
        pending = sum(r.size for r in _uploads.values() if r.waiting)
    if recent + size > settings.UPLOAD_QUOTA_BYTES:
        return 429, (
            f"you uploaded {recent / 2**20:.0f} MB in the last hour; the limit is "
            f"{settings.UPLOAD_QUOTA_BYTES // 2**20} MB an hour"
        )
    if pending + size > settings.UPLOAD_PENDING_BYTES:
        return 507, "the server holds too many uploads not yet used; try again in a few minutes"
    from webapp.budget import make_room

    # Room for this upload, the others still arriving, and always one run besides: uploads
    # alone never take the whole budget from the training slot.
    with _in_flight_lock:
        try:
            make_room(size + settings.RUN_RESERVE_BYTES)
        except ValueError as err:
            return 507, str(err)
        _in_flight["bytes"] += size
    return None


def _done(size: int) -> None:
    with _in_flight_lock:
        _in_flight["bytes"] = max(0, _in_flight["bytes"] - size)


def _client(scope: dict, headers: dict[str, str]) -> str:
    forwarded = headers.get("x-forwarded-for", "")
    if settings.BEHIND_PROXY and forwarded.strip():
        return forwarded.split(",")[-1].strip()  # the address the proxy itself saw
    client = scope.get("client") or ("?", 0)
    return str(client[0])


class UploadGuard:
    """ASGI middleware in front of gradio's upload route (see the module docstring); given to
    ``launch()`` through ``app_kwargs={"middleware": [...]}`` by
    :func:`webapp.guards.launch_options`."""

    def __init__(self, app) -> None:
        self.app = app
        _start_sweeper()

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        if scope.get("method") != "POST" or not path.rstrip("/").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        import anyio

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = _client(scope, headers)
        refusal = await anyio.to_thread.run_sync(admit, client, headers.get("content-length"))
        if refusal is not None:
            status, message = refusal
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": message.encode()})
            return
        answer: dict = {"status": None, "body": []}

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body" and answer["status"] == 200:
                answer["body"].append(message.get("body", b""))
                if not message.get("more_body", False):  # recorded before the client hears
                    try:
                        paths = json.loads(b"".join(answer["body"]) or b"[]")
                    except ValueError:
                        paths = []
                    record_upload(client, [p for p in paths if isinstance(p, str)])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            _done(int(headers["content-length"]))


_sweeper_started = threading.Event()


def _start_sweeper(every: float = 60.0) -> None:
    """A background thread that sweeps unused uploads once a minute (one per process)."""
    if _sweeper_started.is_set():
        return
    _sweeper_started.set()

    def run() -> None:
        while True:
            time.sleep(every)
            try:
                sweep()
            except Exception:  # never let the sweeper die
                log.exception("sweeping uploads failed")

    threading.Thread(target=run, name="kd-upload-sweeper", daemon=True).start()
