"""Checks and readers for files a visitor uploads."""

from __future__ import annotations

from pathlib import Path

from kd.archive import PICKLE_SUFFIXES
from webapp.settings import MAX_UPLOAD_BYTES, UPLOAD_SUFFIXES

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
