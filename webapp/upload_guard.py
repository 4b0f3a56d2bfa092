"""The guard in front of gradio's upload route (``/gradio_api/upload``).

Gradio stores any file before an event asks for it (the page uploads a file as soon as it is
picked). :class:`UploadGuard` admits a request only when it states its length, fits the limits
on uploads (:func:`webapp.uploads.quota_refusal`: 411, 413, 429, 507) and fits the disk budget
(:func:`webapp.budget.admit_upload`: 507); it records what the route stored, for whom
(:func:`webapp.uploads.record_upload`), and a background thread sweeps the uploads no event
used (:func:`webapp.uploads.sweep`).
"""

from __future__ import annotations

import json
import logging
import threading
import time

from webapp import budget, settings
from webapp.uploads import quota_refusal, record_upload, sweep

log = logging.getLogger("kd.app")


def admit(client: str, length: str | None) -> tuple[int, str] | None:
    """Whether an upload request of ``length`` bytes from ``client`` may proceed: None (it is
    then counted as arriving until :func:`webapp.budget.upload_written`), or (HTTP status, one
    line saying why not)."""
    refusal = quota_refusal(client, length)
    if refusal is not None:
        return refusal
    try:
        budget.admit_upload(int(length))
    except ValueError as err:
        return 507, str(err)
    return None


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
            budget.upload_written(int(headers["content-length"]))


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
