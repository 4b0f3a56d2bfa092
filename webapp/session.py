"""Errors shown in the page, and each visitor's own state (kept in ``gr.State``)."""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from webapp import settings
from webapp.budget import make_room
from webapp.gradio_files import remove_upload, served_copy


# ---- errors ------------------------------------------------------------------------------------
def user_error(err: Exception | str) -> gr.Error:
    """A ``gr.Error`` for bad input: the message escaped (gradio renders HTML), no traceback.

    A :class:`kd.config.ConfigError` names the form's label ("'learning rate' must be ...")
    where the CLI names its flag.
    """
    from kd.config import ConfigError

    message = err.for_page() if isinstance(err, ConfigError) else str(err)
    return gr.Error(html.escape(without_server_paths(message), quote=False), print_exception=False)


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def markdown_literal(text: str) -> str:
    """``text`` shown as typed inside Markdown: every character Markdown acts on escaped with a
    backslash, and HTML's ``<`` and ``&`` as entities, so a visitor's text renders no image
    (a remote one would be fetched by every browser that shows it), link, tag or emphasis.

    Example:
        >>> markdown_literal("![x](http://e.com/p.png) <b>")
        '\\!\\[x\\]\\(http://e\\.com/p\\.png\\) &lt;b\\>'
    """
    return _MARKDOWN.sub(r"\\\1", html.escape(text, quote=False).replace("&gt;", ">"))


def _kind_of(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return {str: "text", bool: "true/false", list: "a list", dict: "an object"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _wrong_type(component, value) -> str | None:
    """What is wrong with the type of a value sent for ``component`` (None: nothing)."""
    if value is None:
        return None
    if isinstance(component, (gr.Number, gr.Slider)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and math.isfinite(value):
            return None
        return "a number"
    multiselect = isinstance(component, gr.CheckboxGroup) or (
        isinstance(component, gr.Dropdown) and component.multiselect
    )
    if multiselect:
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            return None
        return "a list of choices"
    if isinstance(component, (gr.Textbox, gr.Dropdown, gr.Radio)):
        return None if isinstance(value, str) else "text"
    return None


def refuse_wrong_types(demo: gr.Blocks) -> None:
    """Give every text, choice and number input of ``demo`` a one-line refusal of a value of
    the wrong type, before gradio or a handler reads it.

    The page sends the right types; an API client may send anything: a model name as a number
    or a list, a string or NaN for a number. Gradio's own preprocessing, or a handler's
    ``.strip()``, then failed with its generic "upstream Gradio app has raised an exception"
    and a traceback in the log; gradio passes a ``gr.Error`` raised in preprocessing to the
    client as it is.
    """
    import functools

    def checked(component, preprocess, payload):
        name = component.label or component.elem_id or type(component).__name__.lower()
        wanted = _wrong_type(component, payload)
        if wanted is not None:
            raise gr.Error(
                html.escape(f"'{name}' takes {wanted}, not {_kind_of(payload)}", quote=False),
                print_exception=False,
            )
        try:
            return preprocess(payload)
        except (TypeError, ValueError) as err:
            first = (str(err).splitlines() or [type(err).__name__])[0][:200]
            message = html.escape(f"'{name}': {first}", quote=False)
            raise gr.Error(message, print_exception=False) from None

    kinds = (gr.Number, gr.Slider, gr.Textbox, gr.Dropdown, gr.Radio, gr.CheckboxGroup)
    for block in demo.blocks.values():
        if isinstance(block, kinds):
            block.preprocess = functools.partial(checked, block, block.preprocess)


_PATH = re.compile(r"(?<![\w.~/-])/[^\s'\"`,;:()\[\]]+")


def _server_bases() -> list[tuple[str, str]]:
    """(absolute folder, how a message names it), the most specific first."""
    from gradio.utils import get_upload_folder

    from kd.io import cache_dir

    bases = [
        (settings.WORK_ROOT, ""),  # a visitor's run: "visitor-x/run-1/..." -> "run-1/..."
        (Path(get_upload_folder()), ""),  # an upload: "<hash>/pairs.tsv" -> "pairs.tsv"
        *([(cache_dir(), "$KD_CACHE")] if os.environ.get("KD_CACHE") else []),
        (settings.ROOT.parent, ".."),
        (Path.home(), "~"),
    ]
    out = []
    for folder, name in bases:
        for spelling in {str(folder), os.path.realpath(folder)}:
            if spelling not in ("/", ""):
                out.append((spelling.rstrip("/"), name))
    return sorted(out, key=lambda item: -len(item[0]))


def without_server_paths(message: str) -> str:
    """``message`` with the server's own folders out of it: the visitors' work folder and
    gradio's upload folder dropped (a file is named by what follows them); ``$KD_CACHE``, the
    repository's parent and the home folder written relative (``~/.cache/...``). Other paths
    (one the visitor typed, a data folder the operator listed) are left as they are.

    Example:
        >>> without_server_paths(f"{Path.home()}/x: no model weights")
        '~/x: no model weights'
    """
    bases = _server_bases()

    def short(match: re.Match) -> str:
        path = match.group(0)
        for base, name in bases:
            if path == base or path.startswith(base + "/"):
                rest = path[len(base) :].lstrip("/")
                if name == "":  # the visitor's (or upload's) own folder level goes too
                    rest = rest.split("/", 1)[1] if "/" in rest else rest
                    return rest or "."
                return f"{name}/{rest}" if rest else name
        return path

    return _PATH.sub(short, message)


# ---- per-visitor state -------------------------------------------------------------------------
@dataclass
class Visitor:
    """One visitor's work: kept in ``gr.State``, so two visitors never share a student.

    Plain fields only: gradio deep-copies the initial value for every new session.
    """

    workdir: str | None = None
    student_dir: str | None = None  # the distilled student (sentence-transformers folder)
    student_zip: str | None = None
    teacher: str | None = None  # the teacher it was distilled from
    metrics: dict | None = None
    config: dict | None = None  # the run prepare_run armed (TrainConfig.to_dict), until it starts
    runs: int = 0
    models: list[str] = field(default_factory=list)  # the models this visitor used, latest last
    uploads: list[str] = field(default_factory=list)  # files they uploaded that events used
    address: str | None = None  # the client's address, recorded when the page loads
    queued: bool = False  # Start pressed, waiting for the training slot
    training: bool = False
    stop_requested: bool = False

    def new_run_dir(self) -> Path:
        """A fresh output folder for the next run, inside this visitor's work folder, once
        the disk budget has room for it (other visitors' oldest folders may go).

        Raises:
            ValueError: runs in progress hold the whole budget.
        """
        keep = (self.workdir,) if self.workdir else ()
        make_room(settings.RUN_RESERVE_BYTES, keep=keep, for_run=True)
        if self.workdir is None or not Path(self.workdir).is_dir():
            settings.WORK_ROOT.mkdir(parents=True, exist_ok=True)
            self.workdir = tempfile.mkdtemp(prefix="visitor-", dir=settings.WORK_ROOT)
        self.runs += 1
        return Path(self.workdir) / f"run-{self.runs}"


def forget_visitor(visitor: Visitor | None) -> None:
    """``gr.State``'s delete callback, and the page's unload: stop the visitor's training and
    delete their files (their runs, gradio's copy of the zip it handed out, their uploads)."""
    if visitor is None:
        return
    visitor.stop_requested = True
    visitor.queued = False  # a run still waiting for the slot no longer holds its address's turn
    if visitor.student_zip:
        served_copy(visitor.student_zip, delete=True)
    for upload in visitor.uploads:
        remove_upload(upload)
    visitor.uploads = []
    if visitor.workdir:
        shutil.rmtree(visitor.workdir, ignore_errors=True)


# ---- the page's sessions ------------------------------------------------------------------------
# Gradio keeps a closed page's state for an hour before its delete callback runs; the page's
# unload event says at once that the visitor left. It names the session, not the state, so the
# page's load event records which Visitor each session holds (gradio's pattern for unload).
_sessions: dict[str, Visitor] = {}
_sessions_lock = threading.Lock()


def client_address(peer: str, forwarded: list[str]) -> str:
    """The client's address: the connection's, or behind a proxy (``settings.BEHIND_PROXY``)
    the last ``X-Forwarded-For`` entry, the address the proxy itself saw (earlier entries are
    the client's to write). ``forwarded``: every ``X-Forwarded-For`` header of the request, in
    order (a proxy may add its own line rather than extend the client's). uvicorn is told not
    to rewrite the connection's address itself (:func:`webapp.guards.trust_no_forwarded_header`).
    """
    entries = [e.strip() for line in forwarded for e in line.split(",") if e.strip()]
    if settings.BEHIND_PROXY and entries:
        return entries[-1]
    return str(peer)


def register_session(visitor: Visitor | None, request: gr.Request | None = None) -> None:
    """The page's load event: remember the session's Visitor, for :func:`end_session`, and the
    client's address, for the one run an address may queue (:func:`webapp.distill.prepare_run`)."""
    session = getattr(request, "session_hash", None)
    if visitor is not None and session:
        client = getattr(request, "client", None)
        headers = getattr(request, "headers", None)
        getlist = getattr(headers, "getlist", None)
        forwarded = getlist("x-forwarded-for") if getlist else []
        visitor.address = client_address(getattr(client, "host", "?"), forwarded)
        with _sessions_lock:
            _sessions[session] = visitor


def end_session(request: gr.Request | None = None) -> None:
    """The page's unload event (the visitor closed or reloaded the tab): their files go now."""
    session = getattr(request, "session_hash", None)
    with _sessions_lock:
        visitor = _sessions.pop(session, None) if session else None
    forget_visitor(visitor)
