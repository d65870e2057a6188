"""The README's and docs' links to files of the repository: each one is there in a fresh clone.

reports/method-speed was embedded in the README while .gitignore kept it out of git, so a clone
showed a broken image; on the machine that rendered it, everything looked right.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text(encoding="utf-8")) if "://" not in t and not t.startswith("mailto:")]


def _tracked() -> set[str] | None:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout (an sdist): existence is checked alone
    return set(out.stdout.decode().split("\0"))


def test_the_link_pattern_finds_the_readmes_images():
    assert {"reports/cifar10-sample/figures/memory_vs_k.png", "docs/methods.md"} <= set(_links(ROOT / "README.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_is_a_file_in_the_repository(page):
    tracked = _tracked()
    links = _links(page)
    for target in links:
        path = (page.parent / target).resolve()
        rel = path.relative_to(ROOT).as_posix()
        assert path.exists(), f"{page.name} links {target}: no such file"
        if tracked is not None and path.is_file():
            assert rel in tracked, f"{page.name} links {target}: not in git (ignored or never added)"
