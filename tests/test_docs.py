"""The documentation: README.md and docs/*.md.

Every relative link resolves to a file of the repository (and, with ``#anchor``, to a heading of
that file, slugged as GitHub does); nothing points outside the repository; the README stays
short; and the docs describe the product, not the project's issue tracker.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
# [text](target) and [text](target "title"); images too (the leading ! is irrelevant)
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...
ISSUE = re.compile(r"\b[Ii]ssue\s+#?\d+")
PARENT_PATH = re.compile(r"(?<![\w.])((?:\.\./)+[^\s)`'\"\]]*)")


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code (where ``[a](b)`` is not a link)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to
    hyphens (``What `make run` does`` -> ``what-make-run-does``)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text()))


def test_the_pages_exist():
    names = {p.name for p in PAGES}
    assert "README.md" in names and len(PAGES) > 1, "docs/*.md missing"


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_relative_links_resolve(page: Path):
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{_id(page)}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_nothing_points_outside_the_repository(page: Path):
    text = page.read_text()
    assert "shared/" not in text, f"{_id(page)} names a shared/ folder outside the repository"
    outside = []
    targets = [t for t in links(page) if not EXTERNAL.match(t)]
    for target in targets + PARENT_PATH.findall(text):  # links, and ../ paths anywhere, code included
        path_part = target.partition("#")[0]
        if not path_part:
            continue
        dest = (page.parent / unquote(path_part)).resolve()
        if dest != ROOT and ROOT not in dest.parents:
            outside.append(target)
    assert not outside, f"{_id(page)} points outside the repository: {outside}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_no_issue_numbers(page: Path):
    hits = [m.group(0) for m in ISSUE.finditer(page.read_text())]
    assert not hits, f"{_id(page)} refers to issues {hits}: describe the product, not its history"


def test_slug_is_githubs():
    assert slug("What `make run` does") == "what-make-run-does"
    assert slug("Sizing for Meta-World ML10 / ML45") == "sizing-for-meta-world-ml10--ml45"
    assert slug("The API's hot path") == "the-apis-hot-path"
    assert slug("Meta-World ML10, one seed on the full budget") == "meta-world-ml10-one-seed-on-the-full-budget"


def test_the_checks_catch_what_they_should(tmp_path):
    """The link checks themselves, on a page with one broken link of each kind."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A `code` heading\n\n[ok](#a-code-heading) [bad](#nope) [gone](missing.md)\n"
                    "```\n[not a link](nowhere.md)\n```\n")
    assert anchors(page) == {"title", "a-code-heading"}
    assert links(page) == ["#a-code-heading", "#nope", "missing.md"]
    assert ISSUE.search("as issue 6 says") and ISSUE.search("Issue #12") and not ISSUE.search("issues")
    assert PARENT_PATH.findall("see `../shared/DESIGN.md` and ../README.md") == ["../shared/DESIGN.md", "../README.md"]
