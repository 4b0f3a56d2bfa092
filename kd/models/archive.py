"""Unpacking a zip that someone else made, without trusting anything in it.

A zip names its own members, and those names are chosen by whoever built it: ``../../.bashrc``,
``/etc/cron.d/job``, a symlink to ``/`` followed by a file "inside" it, a million empty files, or
a few kilobytes that inflate to terabytes. :func:`safe_extract` reads the member list first and
refuses the archive if any of that is there; then it extracts, counting the bytes it really
writes (a header may lie about the size), into a temporary folder that is renamed into place
only when everything went well.

Pickle files (``pytorch_model.bin``, ``*.pt``, ``*.ckpt`` ...) are refused too: unpickling runs
code, and kd loads weights from safetensors only.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from kd.io import atomic_directory

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_MEMBERS = 256
MAX_UNPACKED_BYTES = 2 * 2**30
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n:,} bytes"


def _check_member(archive: str, info: zipfile.ZipInfo, refuse_suffixes: tuple[str, ...]) -> None:
    name = info.filename
    shown = name.encode("unicode_escape").decode("ascii")[:200]
    if "\0" in name or "\\" in name:
        raise ValueError(f"{archive}: member '{shown}' has a backslash or NUL in its name")
    if name.startswith("/") or _DRIVE.match(name):
        raise ValueError(f"{archive}: member '{shown}' has an absolute path; refusing to unpack")
    if ".." in PurePosixPath(name).parts:
        raise ValueError(f"{archive}: member '{shown}' climbs out of the folder with '..'")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ValueError(f"{archive}: member '{shown}' is a symbolic link; links are not unpacked")
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValueError(f"{archive}: member '{shown}' is not a plain file or folder")
    if info.flag_bits & 0x1:
        raise ValueError(f"{archive}: member '{shown}' is encrypted; zip the folder without one")
    if not info.is_dir() and PurePosixPath(name).suffix.lower() in refuse_suffixes:
        raise ValueError(
            f"{archive}: member '{shown}' is a pickle file; pickles can run code when loaded, so "
            "only safetensors weights are accepted (save the model with safe_serialization=True)"
        )


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    *,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_UNPACKED_BYTES,
    refuse_suffixes: tuple[str, ...] = PICKLE_SUFFIXES,
) -> list[Path]:
    """Extract a zip into ``dest`` after checking every member; nothing is written if one fails.

    Refused: absolute paths, ``..`` components, backslashes, symbolic links and other special
    files, encrypted members, duplicate names, more than ``max_members`` members, more than
    ``max_bytes`` once unpacked (declared or actually written), and members whose suffix is in
    ``refuse_suffixes`` (pickle weight files by default). An existing ``dest`` is replaced only
    once the new content is complete.

    Args:
        archive: the zip file.
        dest: the folder to create (or replace) with the archive's content.
        max_members: most entries (files and folders) accepted.
        max_bytes: most bytes accepted once unpacked.
        refuse_suffixes: file suffixes (lower case) that are never unpacked.

    Returns:
        The paths of the extracted files, in archive order.

    Raises:
        ValueError: the file is not a readable zip, or it breaks one of the rules above (the
            message names the member and the rule).

    Example:
        >>> import tempfile, zipfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with zipfile.ZipFile(root / "a.zip", "w") as zf:
        ...     zf.writestr("model/config.json", "{}")
        >>> [p.name for p in safe_extract(root / "a.zip", root / "out")]
        ['config.json']
    """
    archive, dest = Path(archive), Path(dest)
    label = archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        raise ValueError(f"{label}: not a readable zip file") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise ValueError(
                f"{label}: {len(infos):,} members; at most {max_members:,} are accepted"
            )
        seen: set[str] = set()
        declared = 0
        for info in infos:
            _check_member(label, info, refuse_suffixes)
            key = info.filename.rstrip("/")
            if key in seen:
                raise ValueError(f"{label}: member '{key[:200]}' appears twice")
            seen.add(key)
            declared += info.file_size
        if declared > max_bytes:
            raise ValueError(f"{label}: unpacks to {_mb(declared)}; the limit is {_mb(max_bytes)}")
        written: list[Path] = []
        with atomic_directory(dest) as tmp:
            root = tmp.resolve()
            total = 0
            for info in infos:
                target = (tmp / info.filename).resolve()
                if target != root and root not in target.parents:  # belt and braces
                    raise ValueError(f"{label}: member '{info.filename[:200]}' leaves the folder")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "xb") as out:
                        while chunk := src.read(_CHUNK):
                            total += len(chunk)
                            if total > max_bytes:
                                raise ValueError(
                                    f"{label}: unpacks to more than {_mb(max_bytes)} (more than "
                                    "its headers declare); refusing it"
                                )
                            out.write(chunk)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
                    raise ValueError(
                        f"{label}: member '{info.filename[:200]}' is damaged or uses an "
                        f"unsupported compression ({err})"
                    ) from None
                except FileExistsError:
                    raise ValueError(
                        f"{label}: member '{info.filename[:200]}' clashes with another"
                    ) from None
                written.append(dest / info.filename)
    return written
