"""Pushable to a Hugging Face Space as it is: every large or binary file is marked for LFS/Xet.

The Hub refuses a push with a binary file, or a file over 10 MB, that is not stored through
LFS or Xet; ``.gitattributes`` names them by pattern, as the Hub's own template does.
"""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HUB_LIMIT = 10 * 1024 * 1024
"""Bytes above which the Hub wants a file in LFS/Xet."""


def lfs_patterns(text: str) -> list[str]:
    """The patterns of ``.gitattributes`` lines that route files through the LFS filter."""
    patterns = []
    for line in text.splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def matches(path: str, pattern: str) -> bool:
    """Git's rule, as far as these patterns need it: a pattern without a slash matches the file
    name at any depth; one with a slash matches the path from the top."""
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.replace("**/", "*"))


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing is pushed from here")
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def is_binary(path: Path) -> bool:
    with path.open("rb") as fh:
        return b"\0" in fh.read(8192)


def test_patterns_match_as_git_does() -> None:
    assert matches("assets/prebuilt-student/delta.safetensors", "*.safetensors")
    assert matches("a/b/events.out.tfevents.1", "*tfevents*")
    assert matches("saved_model/x/variables.data", "saved_model/**/*")
    assert not matches("app.py", "*.safetensors")
    assert lfs_patterns("# *.png filter=lfs\n*.bin filter=lfs diff=lfs\n*.py text\n") == ["*.bin"]


def test_every_large_or_binary_file_is_marked_for_lfs() -> None:
    patterns = lfs_patterns((ROOT / ".gitattributes").read_text(encoding="utf-8"))
    assert "*.safetensors" in patterns and "*.png" in patterns
    unmarked = []
    for name in tracked_files():
        path = ROOT / name
        large_or_binary = path.stat().st_size > HUB_LIMIT or is_binary(path)
        if large_or_binary and not any(matches(name, p) for p in patterns):
            unmarked.append(name)
    assert not unmarked, f"add a pattern to .gitattributes for: {unmarked}"


def test_the_space_and_ci_install_the_same_debian_packages_fonts_included():
    """packages.txt (what a Space installs) and .ci/run name the same packages, and both carry
    fonts for every script of the demo sentences: without them, PNGs and screenshots rendered
    on the server show empty boxes for Chinese, Japanese, Hindi or Arabic."""
    space = set(ROOT.joinpath("packages.txt").read_text(encoding="utf-8").split())
    ci = ROOT.joinpath(".ci", "run").read_text(encoding="utf-8")
    installed = set(ci.split("apt-get install -y -qq", 1)[1].split(">/dev/null", 1)[0].split())
    installed -= {"\\"}
    assert {"fonts-noto-core", "fonts-noto-cjk", "wordnet-base", "fortunes"} <= space
    assert space <= installed and installed - space == {"chromium"}
