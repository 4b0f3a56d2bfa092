"""The guard in front of gradio's upload route (``/gradio_api/upload``).

Gradio stores any file before an event asks for it (the page uploads a file as soon as it is
picked). :class:`UploadGuard` admits a request only when it states its length and is not
chunked, fits the limits on uploads (:func:`webapp.uploads.reserve`: 411, 413, 429, 507; the
request is counted at its declared length from then on, so parallel requests see each other)
and fits the disk budget (:func:`webapp.budget.admit_upload`: 507). While the body arrives it
reads it for gradio (:class:`_Body`) and ends the request, with gradio deleting what it had
written, when the body runs past its declared length (413), when the client hangs up before
the end, or when a file comes under a form field other than ``files`` (gradio would write it,
then ignore it and leave it on disk; 400). It records what the route stored, for whom
(:func:`webapp.uploads.record_upload`); a request that ended otherwise stays in its client's
quota at the bytes it sent (:func:`webapp.uploads.settle`).

Every other request is held to less (:meth:`UploadGuard._other`): no chunked body (411), a
``Content-Length`` of at most ``settings.MAX_BODY_BYTES`` (413), no multipart body (415: gradio's
component and recording routes would write its files to disk outside this guard), and no file
value naming a remote URL (400: gradio would download it, with no size cap).

A background thread sweeps the uploads no event used (:func:`webapp.uploads.sweep`) and, while
no upload is arriving, any temporary file an unfinished request left behind
(:func:`webapp.gradio_files.remove_leftovers`), as the guard does when the server starts.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from webapp import budget, settings
from webapp.gradio_files import remove_leftovers
from webapp.uploads import record_upload, reserve, settle, sweep

log = logging.getLogger("kd.app")

UPLOAD_FIELD = b"files"
"""The one form field gradio's upload route keeps files from."""


def admit(client: str, length: str | None) -> int | tuple[int, str]:
    """Whether an upload request of ``length`` bytes from ``client`` may proceed: a ticket
    (the request is then counted at that length in the client's quota until
    :func:`webapp.uploads.record_upload` or :func:`webapp.uploads.settle`, and as arriving until
    :func:`webapp.budget.upload_written`), or (HTTP status, one line saying why not)."""
    answer = reserve(client, length)
    if not isinstance(answer, int):
        return answer
    try:
        budget.admit_upload(int(length))
    except ValueError as err:
        settle(answer, 0)
        return 507, str(err)
    return answer


def _client(scope: dict) -> str:
    from webapp.session import client_address

    forwarded = [
        v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-forwarded-for"
    ]
    return client_address(str((scope.get("client") or ("?", 0))[0]), forwarded)


def _remote_file(body: bytes) -> str | None:
    """The first remote URL a JSON body gives as a file value's path (gradio downloads such a
    file to use it), or None."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None  # gradio answers a malformed body itself
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            path = value.get("path")
            if isinstance(path, str) and path.strip().lower().startswith(("http:", "https:")):
                return path.strip()
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None


class _FileFields:
    """Watches a multipart body's part headers as it arrives: ``bad`` is the first field name
    under which a file comes that is not :data:`UPLOAD_FIELD` (None while all are)."""

    def __init__(self, content_type: str) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        self._options = parse_options_header
        self.bad: str | None = None
        self._name = self._value = b""
        self._disposition = b""
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        callbacks = {
            "on_part_begin": self._begin,
            "on_header_field": self._field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }
        # Without a boundary gradio refuses the request before reading its body.
        self._parser = MultipartParser(boundary, callbacks) if boundary else None

    def feed(self, data: bytes) -> None:
        if self._parser is None or self.bad is not None:
            return
        from python_multipart.exceptions import MultipartParseError

        try:
            self._parser.write(data)
        except MultipartParseError:  # gradio's own parser says what is wrong with the body
            self._parser = None

    def _begin(self) -> None:
        self._disposition = b""

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = self._value
        self._name = self._value = b""

    def _headers_finished(self) -> None:
        _, options = self._options(self._disposition)
        if b"filename" in options and options.get(b"name") != UPLOAD_FIELD:
            self.bad = options.get(b"name", b"").decode("latin-1")[:40]


class _Body:
    """An upload's ``receive`` as gradio's route sees it: the body, within what was admitted.

    It raises starlette's ``MultiPartException`` (the error gradio's multipart parser raises
    itself, on which it deletes the files it was writing and answers 400, or 413 for a message
    about the maximum allowed size) when the body runs past its declared length, when the client
    hangs up before the end, and before any part that holds a file under another field than
    :data:`UPLOAD_FIELD`. ``received``: the body's bytes so far.
    """

    def __init__(self, receive, declared: int, content_type: str) -> None:
        self.receive = receive
        self.declared = declared
        self.received = 0
        self.complete = False
        self.fields = _FileFields(content_type)

    async def __call__(self) -> dict:
        from starlette.formparsers import MultiPartException

        message = await self.receive()
        if message["type"] == "http.disconnect":
            if not self.complete:
                raise MultiPartException("the upload was cut off before its end")
            return message
        body = message.get("body", b"")
        self.received += len(body)
        if self.received > self.declared:
            raise MultiPartException(
                f"the upload runs past its declared Content-Length of {self.declared:,} bytes, "
                "the maximum allowed size for it"
            )
        self.fields.feed(body)
        if self.fields.bad is not None:
            raise MultiPartException(
                f"a file came under the form field '{self.fields.bad}'; this route takes files "
                f"under '{UPLOAD_FIELD.decode()}' only"
            )
        if not message.get("more_body", False):
            self.complete = True
        return message


_active = {"uploads": 0}  # upload requests admitted and not yet ended
_active_lock = threading.Lock()


def remove_leftovers_if_idle() -> int:
    """Delete what unfinished uploads left in the upload folder, when none is arriving (a
    temporary file of one still arriving is in use); the bytes freed."""
    with _active_lock:
        if _active["uploads"]:
            return 0
        freed = remove_leftovers()
    if freed:
        log.info("uploads: deleted %.1f MB left by unfinished uploads", freed / 2**20)
    return freed


async def _refuse(send, status: int, message: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": message.encode()})


class UploadGuard:
    """ASGI middleware in front of gradio's upload route (see the module docstring); given to
    ``launch()`` through ``app_kwargs={"middleware": [...]}`` by
    :func:`webapp.guards.launch_options`."""

    def __init__(self, app) -> None:
        self.app = app
        remove_leftovers_if_idle()  # what a stopped process's unfinished uploads left
        _start_sweeper()

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope.get("method") != "POST" or not scope.get("path", "").rstrip("/").endswith(
            "/upload"
        ):
            await self._other(scope, receive, send, headers)
            return
        await self._upload(scope, receive, send, headers)

    async def _other(self, scope, receive, send, headers: dict[str, str]) -> None:
        """Any request but an upload: a small body, stated up front, no files in it."""
        length = headers.get("content-length")
        if "transfer-encoding" in headers:
            await _refuse(send, 411, "a request must state its Content-Length and not be chunked")
            return
        if length is None:  # no body (h11 and httptools read none without a length)
            await self.app(scope, receive, send)
            return
        if not length.strip().isdigit() or int(length) > settings.MAX_BODY_BYTES:
            await _refuse(
                send,
                413,
                f"the request body is {length[:20]} bytes; the limit is "
                f"{settings.MAX_BODY_BYTES // 1024:,} KB (uploads go to /gradio_api/upload)",
            )
            return
        content_type = headers.get("content-type", "").lower()
        if content_type.startswith("multipart/"):
            await _refuse(send, 415, "files go to /gradio_api/upload; this route takes none")
            return
        if not int(length):
            await self.app(scope, receive, send)
            return
        # Read whatever its stated type (FastAPI may parse JSON sent as another type).
        body, more = b"", True
        while more:  # at most MAX_BODY_BYTES, as stated
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        remote = _remote_file(body)
        if remote is not None:
            await _refuse(
                send,
                400,
                f"a file value names the URL {remote[:100]}; this server does not fetch files "
                "from URLs: upload the file to /gradio_api/upload and pass its path",
            )
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _upload(self, scope, receive, send, headers: dict[str, str]) -> None:
        import anyio

        client = _client(scope)
        if "transfer-encoding" in headers:  # its length is known only once it has been read
            await _refuse(send, 411, "an upload must state its Content-Length and not be chunked")
            return
        length = headers.get("content-length")
        ticket = await anyio.to_thread.run_sync(admit, client, length)
        if not isinstance(ticket, int):
            await _refuse(send, *ticket)
            return
        body = _Body(receive, int(length), headers.get("content-type", ""))
        answer: dict = {"status": None, "body": [], "recorded": False}

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
                    paths = [p for p in paths if isinstance(p, str)]
                    if paths:
                        record_upload(client, paths, ticket)
                        answer["recorded"] = True
            await send(message)

        with _active_lock:
            _active["uploads"] += 1
        try:
            await self.app(scope, body, capture)
        finally:
            with _active_lock:
                _active["uploads"] -= 1
            budget.upload_written(int(length))
            if not answer["recorded"]:
                settle(ticket, body.received)


_sweeper_started = threading.Event()


def _start_sweeper(every: float = 60.0) -> None:
    """A background thread that sweeps unused uploads, and what unfinished uploads left,
    once a minute (one per process)."""
    if _sweeper_started.is_set():
        return
    _sweeper_started.set()

    def run() -> None:
        while True:
            time.sleep(every)
            try:
                sweep()
                remove_leftovers_if_idle()
            except Exception:  # never let the sweeper die
                log.exception("sweeping uploads failed")

    threading.Thread(target=run, name="kd-upload-sweeper", daemon=True).start()
