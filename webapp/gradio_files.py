"""Files in gradio's upload folder: what visitors uploaded and gradio's copies of what the page
handed out (one folder per file content, named by its hash). The lowest layer of the public
server's disk handling: :mod:`webapp.budget`, :mod:`webapp.uploads` and :mod:`webapp.session`
all delete through it.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def upload_folder() -> Path:
    """Gradio's upload folder: visitors' uploads and its copies of the files it served."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def served_copy(path: str | Path, delete: bool = False) -> Path | None:
    """Gradio's copy of a file the page handed out (its cache keeps one per file content),
    or None; ``delete``: remove that copy and its folder."""
    from gradio.processing_utils import hash_file

    file = Path(path)
    try:
        folder = upload_folder() / hash_file(file)
    except OSError:
        return None
    copy = folder / file.name
    if delete and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
    return copy if copy.exists() or delete else None


def remove_upload(path: str | Path) -> None:
    """Delete an uploaded file and its folder in gradio's upload folder (one hash per file)."""
    file = Path(path)
    root = upload_folder().resolve()
    try:
        folder = file.resolve().parent
    except OSError:
        return
    if folder.parent == root:
        shutil.rmtree(folder, ignore_errors=True)
    elif root in folder.parents:
        file.unlink(missing_ok=True)


def remove_leftovers() -> int:
    """Delete the loose temporary files at the top of gradio's upload folder; the bytes freed.

    Gradio writes each file of an upload request there (``tmpXXXXXXXX``) while the request
    arrives, then moves it into a folder named by its hash; a file still lying loose belongs to
    a request that never finished (a field gradio ignores, a client that hung up, a process that
    stopped). Gradio's File component also leaves an empty one there each time it hands a
    handler a path (seen in ``bench/abuse.py``), never used again. Call only while no upload is
    arriving (:mod:`webapp.upload_guard` knows).
    """
    folder = upload_folder()
    freed = 0
    if not folder.is_dir():
        return 0
    for entry in folder.iterdir():
        try:
            if entry.name.startswith("tmp") and entry.is_file() and not entry.is_symlink():
                size = entry.stat().st_size
                entry.unlink()
                freed += size
        except OSError:
            continue
    return freed
