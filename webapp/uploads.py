"""Checks and readers for files a visitor uploads."""

from __future__ import annotations

from pathlib import Path

from webapp.settings import MAX_UPLOAD_BYTES, UPLOAD_SUFFIXES


def check_upload(path: str | None, what: str = "the uploaded file") -> Path:
    """An uploaded file's path after checking that it exists, is small enough, has a known type."""
    if not path:
        raise ValueError(f"no file uploaded; upload {what} first")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} is gone from the server; upload it again")
    size = file.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(
            f"{file.name} is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB"
        )
    if file.suffix.lower() not in UPLOAD_SUFFIXES:
        raise ValueError(
            f"{file.name}: unknown file type; upload .tsv/.txt (english<TAB>translation per "
            "line, first line en<TAB>xx) or .jsonl"
        )
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
