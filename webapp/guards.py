"""Which of the server's files a visitor may reach by typing a name, and what the server serves.

Three fields take free text that could name a place on the server: the teacher and student
dropdowns (custom values allowed) and the Aligned-spaces Tatoeba folder. Each is checked here
before anything is opened:

- a model is an offline id (``kd models``), a Hugging Face id ``owner/name``, or a folder inside
  the model folders: kd's cache, the folders listed in ``$KD_MODEL_DIRS``, and the visitor's
  own work folder (their distilled or uploaded student); such a folder must hold safetensors
  weights and no pickle file (:func:`kd.models.registry.check_local_dir`, the rule loading applies);
- a Tatoeba folder lies inside the data folders: ``../shared/data`` next to the repository when
  present, and the folders listed in ``$KD_DATA_DIRS``.

Paths are resolved (``..`` and symbolic links followed) before the containment check, so
``../../root``, ``~/.ssh`` or a link pointing out of an allowed folder are all refused. The
refusal is the same whether or not the path exists, so the message tells nothing about the
server's files beyond the allowed folders it names.

:func:`launch_options` gives ``launch()`` the same folders as ``blocked_paths`` (so a later
``GRADIO_ALLOWED_PATHS`` cannot expose them) and the upload size cap.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kd.models.registry import OFFLINE_MODELS, check_local_dir
from webapp import settings
from webapp.session import Visitor

# Hugging Face's rule for a repository name part: letters, digits, '-', '_', '.', at most 96
# characters, not starting or ending with '-' or '.'.
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"{_PART}/{_PART}")


def _env_dirs(var: str) -> list[Path]:
    """Existing folders listed in an environment variable (``os.pathsep``-separated)."""
    dirs = []
    for item in os.environ.get(var, "").split(os.pathsep):
        item = item.strip()
        if item and Path(item).expanduser().is_dir():
            dirs.append(Path(item).expanduser().resolve())
    return dirs


def model_roots(visitor: Visitor | None = None) -> list[Path]:
    """Folders a typed model path may lie in: kd's cache, ``$KD_MODEL_DIRS``, the static
    students ``$KD_STATIC`` offers, the visitor's own."""
    from kd.io import cache_dir

    roots = [cache_dir().resolve(), *_env_dirs(settings.MODEL_DIRS_ENV)]
    roots += [Path(p) for p in settings.static_choices()]
    if visitor is not None and visitor.workdir and Path(visitor.workdir).is_dir():
        roots.append(Path(visitor.workdir).resolve())
    return roots


def _roots_shown(roots: list[Path]) -> str:
    return ", ".join(_shown(r) for r in roots)


def data_roots() -> list[Path]:
    """Folders a typed data path may lie in: ``../shared/data`` if present, ``$KD_DATA_DIRS``."""
    roots = [settings.SHARED_DATA.resolve()] if settings.SHARED_DATA.is_dir() else []
    return roots + _env_dirs(settings.DATA_DIRS_ENV)


def tatoeba_folders() -> list[str]:
    """The Tatoeba-format folders (``tatoeba.XXX-eng.XXX`` files) in the data folders, two
    levels deep at most, named as the page shows them: what the Aligned tab can offer."""
    found = []
    for root in data_roots():
        for folder in [root, *root.glob("*"), *root.glob("*/*")]:
            if folder.is_dir() and next(folder.glob("tatoeba.*-eng.*"), None) is not None:
                found.append(_shown(folder.resolve()))
    return list(dict.fromkeys(found))


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (already resolved) is one of ``roots`` or lies below one."""
    return any(path == root or root in path.parents for root in roots)


def _shown(path: Path) -> str:
    """A folder as the page names it: a visitor's own as "your own runs" (its name is the
    server's business), else relative to the repository's parent, else ``~``-based."""
    work = settings.WORK_ROOT.resolve()
    if work in path.parents:
        return "your own runs"
    for base, prefix in ((settings.ROOT.parent, ".."), (Path.home(), "~")):
        try:
            rest = path.relative_to(base.resolve())
        except ValueError:
            continue
        return f"{prefix}/{rest.as_posix()}" if rest.parts else prefix
    return str(path)


def _resolve_typed(text: str, base: Path | None) -> Path | None:
    """The absolute, resolved path a typed text names (relative to ``base`` or the working
    folder), or None if it cannot be a path on this server."""
    if "\0" in text or "\\" in text:
        return None
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name too long
        return None


def check_model_name(
    name: str | None, visitor: Visitor | None = None, *, also_under: tuple[Path, ...] = ()
) -> str:
    """A typed teacher or student, checked before any file is opened; returns its canonical
    name: an offline or Hub id as typed, a folder as its resolved absolute path, so that
    ``.../x``, ``.../x/`` and ``.../x/./`` are one model to every cache and index.

    ``also_under``: more allowed folders, not named in messages (the model cache's backstop
    passes the root of all visitors' folders: ownership is the handlers' check, with
    ``visitor``).

    This is the page's one check of a model name: every tab and the model cache call it, and
    a folder that passes it also passes the weights rule that loading applies.

    A Hub id other than the offline ones passes only where the server allows downloads
    (:func:`check_hub_model`: off unless ``KD_HUB_MODELS`` is set).

    Example:
        >>> check_model_name(" sentence-transformers/all-MiniLM-L6-v2 ")
        'sentence-transformers/all-MiniLM-L6-v2'

    Raises:
        ValueError: empty, or neither an offline id, a Hugging Face ``owner/name`` id, nor a
            folder inside :func:`model_roots` (the message lists those folders); or a folder
            without safetensors weights, or with a pickle file; or a Hub id this server will
            not download.
    """
    name = (name or "").strip()
    if not name:
        raise ValueError("no model chosen; pick a teacher and a student at the top of the page")
    if name in OFFLINE_MODELS:
        return name
    local = os.path.lexists(Path(name).expanduser()) if "\0" not in name else False
    if HUB_ID.fullmatch(name) and ".." not in name and not local:
        return check_hub_model(name)  # downloaded by transformers, where the server allows it
    roots = model_roots(visitor)
    extra = [Path(p).resolve() for p in also_under]
    path = _resolve_typed(name, None)
    if path is None or not inside(path, roots + extra):
        raise ValueError(
            f"unknown model '{name[:200]}': not an offline model, not a Hugging Face id "
            "(owner/name) and not a folder inside the ones this server loads models from ("
            + _roots_shown(roots)
            + f"; the server's {settings.MODEL_DIRS_ENV} adds folders). Offline models: "
            + ", ".join(OFFLINE_MODELS)
        )
    if not path.exists():
        raise ValueError(f"unknown model '{name[:200]}': no such folder")
    if not path.is_dir():
        raise ValueError(f"'{name[:200]}': give a model folder, not a file")
    try:
        check_local_dir(path)
    except ValueError as err:  # name the folder as the visitor typed it
        raise ValueError(str(err).replace(str(path), name[:200], 1)) from None
    return str(path)


def canonical_model_name(name: str) -> str:
    """The one spelling of a model name every cache is keyed by: an id as it is, a folder's
    resolved absolute path (the same folder typed three ways is loaded once)."""
    name = (name or "").strip()
    if not name or name in OFFLINE_MODELS or "\0" in name:
        return name
    local = Path(name).expanduser()
    if local.is_absolute() or os.path.lexists(local):
        try:
            return str(local.resolve())
        except (OSError, RuntimeError):
            return name
    return name


def shown_model(name: str) -> str:
    """A model as the page names it: an id as it is, a folder without the server's layout
    (``~``- or ``..``-relative, or only its last part)."""
    if not name or not Path(name).is_absolute():
        return name
    path = Path(name)
    shown = _shown(path)
    return shown if shown != str(path) else path.name


def check_hub_model(name: str) -> str:
    """A Hugging Face ``owner/name`` id (not an offline one), allowed only where the server
    says so: ``KD_HUB_MODELS`` on, the Hub answering within ``HUB_PROBE_S``, and the
    repository's files within ``KD_HUB_MAX_MB``. A model already in the local Hugging Face
    cache needs no download and passes.

    Raises:
        ValueError: downloads are off, the Hub cannot be reached, the repository is missing or
            larger than the cap.
    """
    if _in_hub_cache(name):
        return name
    offline = ", ".join(OFFLINE_MODELS)
    if not settings.HUB_MODELS:
        raise ValueError(
            f"'{name}': this server does not download models from the Hugging Face Hub "
            f"(KD_HUB_MODELS is off); pick an offline model: {offline}"
        )
    from kd.data.sources import hub_reachable

    if not hub_reachable(timeout=settings.HUB_PROBE_S):
        raise ValueError(
            f"'{name}': the Hugging Face Hub cannot be reached from this server; pick an "
            f"offline model: {offline}"
        )
    size = hub_repo_bytes(name)
    if size > settings.HUB_MAX_BYTES:
        raise ValueError(
            f"'{name}' holds {size / 2**20:,.0f} MB of files; this server downloads models "
            f"up to {settings.HUB_MAX_BYTES // 2**20:,} MB (KD_HUB_MAX_MB)"
        )
    return name


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # no huggingface_hub, a name it refuses
        return False


def hub_repo_bytes(name: str) -> int:
    """The total size of a Hub model repository's files (one metadata request, bounded).

    Raises:
        ValueError: no such repository, or the Hub did not answer in time.
    """
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(name, files_metadata=True, timeout=10)
    except Exception as err:  # not found, gated, timed out
        raise ValueError(
            f"'{name}': no such model on the Hugging Face Hub, or it cannot be read "
            f"({type(err).__name__})"
        ) from None
    return sum(int(getattr(f, "size", 0) or 0) for f in (info.siblings or []))


def check_data_dir(text: str | None) -> Path:
    """A typed Tatoeba folder, resolved and checked to lie inside :func:`data_roots`.

    Relative paths are taken from the repository (the field's placeholder,
    ``../shared/data/tatoeba-dev``, works wherever the server was started). The folder's
    ``tatoeba.*`` files must resolve inside the data folders too: a link to ``/etc/passwd``
    placed in an allowed folder is refused.

    Raises:
        ValueError: empty, outside the data folders (the message lists them), not a folder, or
            holding a ``tatoeba.*`` link that leads out.
    """
    text = (text or "").strip()
    roots = data_roots()
    allowed = ", ".join(_shown(r) for r in roots) or "none on this server"
    if not text:
        raise ValueError(
            f"type the path of a folder with tatoeba.XXX-eng.XXX files, inside: {allowed}"
        )
    path = _resolve_typed(text, settings.ROOT)
    if path is None or not inside(path, roots):
        raise ValueError(
            f"'{text[:200]}' is outside the folders this server reads data from ({allowed}; the "
            f"server's {settings.DATA_DIRS_ENV} adds folders); pick a folder inside them, or "
            "use the built-in sentences or an uploaded file"
        )
    if not path.is_dir():
        raise ValueError(
            f"'{text[:200]}': not a directory; pass the folder holding tatoeba.XXX-eng.XXX files"
        )
    for entry in path.iterdir():
        if entry.name.startswith("tatoeba.") and not inside(entry.resolve(), roots):
            raise ValueError(
                f"'{text[:200]}': {entry.name} is a link that leads outside the allowed "
                f"folders ({allowed}); refusing to read it"
            )
    return path


def blocked_paths() -> list[str]:
    """Folders gradio must never serve: kd's cache, the repository, the model and data folders.

    Gradio serves only its upload folder by default; blocking these as well means that an
    operator's later ``GRADIO_ALLOWED_PATHS`` cannot expose them. A folder holding the
    visitors' work or gradio's own upload folder is left out (blocking it would stop gradio
    from handing visitors their student zip).
    """
    from gradio.utils import get_upload_folder

    from kd.io import cache_dir

    keep_open = [settings.WORK_ROOT.resolve(), Path(get_upload_folder()).resolve()]
    candidates = [
        cache_dir().resolve(),
        settings.ROOT.resolve(),
        *_env_dirs(settings.MODEL_DIRS_ENV),
        *data_roots(),
    ]
    blocked: list[str] = []
    for folder in candidates:
        if any(inside(open_dir, [folder]) for open_dir in keep_open):
            continue
        if str(folder) not in blocked:
            blocked.append(str(folder))
    return blocked


def trust_no_forwarded_header() -> None:
    """Tell uvicorn to leave a request's client address as the connection's, unless the
    operator set ``FORWARDED_ALLOW_IPS`` (called by ``main()`` before launch).

    uvicorn replaces the address with the ``X-Forwarded-For`` header's whenever the connection
    comes from 127.0.0.1, whatever ``KD_BEHIND_PROXY`` says; the app decides instead
    (:func:`webapp.session.client_address`), so each client's quota and turn is counted for
    the address the connection, or behind a proxy the proxy, saw.
    """
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")


def launch_options() -> dict:
    """The ``launch()`` arguments that limit uploads and what gradio serves, and the page's
    style (gradio 6 takes ``css`` in ``launch()``); ``main()`` and the tests use the same.

    The upload route gets :class:`webapp.upload_guard.UploadGuard` in front of it (request size,
    a quota per client, the disk budget, unused uploads swept).
    """
    from starlette.middleware import Middleware

    from webapp.upload_guard import UploadGuard

    return {
        "max_file_size": settings.MAX_STUDENT_ZIP_BYTES,
        "blocked_paths": blocked_paths(),
        "css": settings.PAGE_CSS,
        "app_kwargs": {"middleware": [Middleware(UploadGuard)]},
    }
