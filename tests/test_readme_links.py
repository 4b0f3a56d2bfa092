"""The README stays a short front door, and every page it and docs/ link to exists.

Pure Python: reads the markdown files only (no torch, no models).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 350
TEST_COMMAND = 'pip install -e ".[dev]" && python -m pytest'

# [text](target) and ![alt](target); the target ends at the first space or closing parenthesis
# (a title after a space, as in [a](b "title"), is ignored).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[^)]*)?\)")
FENCE = re.compile(r"^(```|~~~)")


def pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def targets(text: str) -> list[str]:
    """The link and image targets of a markdown text, outside fenced code blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            found.extend(LINK.findall(line))
    return found


def local_path(target: str) -> str | None:
    """The file part of a relative target; None for web links, mail links and pure anchors."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
        return None
    return target.split("#", 1)[0].split("?", 1)[0] or None


def test_targets_are_found_as_markdown_writes_them() -> None:
    text = (
        "![a](assets/x.png) and [b](docs/y.md#part) [c](https://example.org) [d](#here)\n"
        "```\n[not](a/link.md)\n```\n"
    )
    assert targets(text) == ["assets/x.png", "docs/y.md#part", "https://example.org", "#here"]
    assert [local_path(t) for t in targets(text)] == ["assets/x.png", "docs/y.md", None, None]


def test_readme_is_a_short_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_keeps_the_test_command() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert TEST_COMMAND in lines
    # .ci/run takes the first line that starts this way; it must be the test command.
    first = next(line for line in lines if re.match(r'^pip install -e "\.\[dev\]"', line))
    assert first == TEST_COMMAND


def test_every_relative_link_and_image_exists() -> None:
    assert (ROOT / "docs").is_dir()
    missing = []
    for page in pages():
        for target in targets(page.read_text(encoding="utf-8")):
            path = local_path(target)
            if path is not None and not (page.parent / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {target}")
    assert not missing, missing


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (ROOT / path).resolve()
        for target in targets(README.read_text(encoding="utf-8"))
        if (path := local_path(target)) is not None
    }
    unlinked = [p.name for p in pages()[1:] if p.resolve() not in linked]
    assert not unlinked, unlinked
