"""The README and the pages under docs/ hold together: no link to a moved page or a renamed heading, no page that
only a search finds, and a README that stays one or two screens long.

Anchors follow GitHub's rule for heading ids (github-slugger, which GitHub's Markdown rendering uses): the
heading's text, lowercased, with every character that is not a letter, digit, underscore, space or hyphen
removed, each space turned into a hyphen, and a repeated id suffixed -1, -2, ... in order. Links inside code
(fenced blocks, code spans) and HTML comments are text, not links. External links are checked for shape only:
the tests run offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 150

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
CODE_SPAN = re.compile(r"``(?:[^`]|`(?!`))+``|`(?:[^`\n]|\n(?![ \t]*\n))+`")
INLINE_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^()<>\s]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML_SRC = re.compile(r"<(?:img|a)\s[^>]*\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def without_code_blocks(text: str) -> str:
    """The text with every fenced block blanked line for line, so what remains is prose and headings."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append("")
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(fence[0] + " "):
                fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def heading_text(raw: str) -> str:
    """What GitHub renders of a heading: link text without its target, no emphasis markers."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    return re.sub(r"\*+", "", text)


def slug(text: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading_text(text).lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every id a page offers: its headings' slugs (repeats numbered like GitHub does) and explicit HTML ids."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    prose = without_code_blocks(text)
    for line in prose.splitlines():
        m = ATX_HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    found.update(HTML_ANCHOR.findall(HTML_COMMENT.sub("", prose)))
    return found


@dataclass(frozen=True)
class Link:
    page: Path
    target: str
    image: bool

    def __str__(self) -> str:
        return f"{rel(self.page)}: {'image ' if self.image else ''}link ({self.target})"


def links(page: Path) -> Iterator[Link]:
    prose = CODE_SPAN.sub(" ", HTML_COMMENT.sub("", without_code_blocks(page.read_text())))
    for m in INLINE_LINK.finditer(prose):
        yield Link(page, m.group(3), image=m.group(1) == "!")
    for target in REFERENCE_DEFINITION.findall(prose):
        yield Link(page, target, image=False)
    for target in HTML_SRC.findall(prose):
        yield Link(page, target, image=False)


def resolve(link: Link) -> tuple[Path | None, str]:
    """(the file a relative link names, its anchor); the path is None for an in-page anchor."""
    path, _, anchor = link.target.partition("#")
    if not path:
        return None, anchor
    return (link.page.parent / unquote(path)).resolve(), unquote(anchor)


def problem(link: Link) -> str | None:
    """Why ``link`` is broken, or None when it points somewhere real."""
    if URL_SCHEME.match(link.target):
        parts = urlsplit(link.target)
        if parts.scheme in ("http", "https"):
            host = parts.hostname or ""
            if "." not in host and host != "localhost":
                return f"{link}: {host or 'no host'!r} is not a host name"
            return None
        if parts.scheme == "mailto" and "@" in parts.path:
            return None
        return f"{link}: scheme {parts.scheme!r} is neither http(s) nor mailto"
    if link.target.startswith("/"):
        return f"{link}: a path from the site root does not work on GitHub's file view; write it relative to the page"
    path, anchor = resolve(link)
    target = path or link.page
    if path is not None:
        if not path.is_relative_to(ROOT):
            return f"{link}: leaves the repository"
        if not path.exists():
            return f"{link}: {rel(path)} does not exist"
    if anchor:
        if target.suffix != ".md":
            return f"{link}: an anchor into {rel(target)} cannot be checked; link the file"
        offered = anchors(target.read_text())
        if anchor not in offered:
            near = sorted(a for a in offered if a[:4] == anchor[:4]) or sorted(offered)[:8]
            return f"{link}: no heading with id {anchor!r} in {rel(target)}; ids there include {near}"
    return None


def reachable_from(start: Path) -> set[Path]:
    """Every Markdown page that following relative links from ``start`` arrives at."""
    seen = {start}
    todo = [start]
    while todo:
        page = todo.pop()
        for link in links(page):
            if URL_SCHEME.match(link.target) or link.target.startswith("/"):
                continue
            path, _ = resolve(link)
            if path is not None and path.suffix == ".md" and path.is_file() and path not in seen:
                seen.add(path)
                todo.append(path)
    return seen


# --- The slug rule and the checker itself ---------------------------------------------------------------------


@pytest.mark.parametrize(("heading", "expected"), [
    ("Is it right? Verify", "is-it-right-verify"),
    ("Upgrading KubeRay: CRDs", "upgrading-kuberay-crds"),
    ("The server's side in load-test results", "the-servers-side-in-load-test-results"),
    ("Where the metrics go (`eks_inference/constructs/observability.py`)",
     "where-the-metrics-go-eks_inferenceconstructsobservabilitypy"),
    ("`dev` (us-west-2)", "dev-us-west-2"),
    ("1. Where the weights come from", "1-where-the-weights-come-from"),
    ("**Bold** and [a link](x.md)", "bold-and-a-link"),
    ("Two  spaces", "two--spaces"),
])
def test_heading_ids_follow_githubs_rule(heading: str, expected: str) -> None:
    """GIVEN a heading as written WHEN its id is computed THEN it is the one GitHub gives it."""
    assert slug(heading) == expected


def test_repeated_headings_are_numbered_and_code_is_not_a_heading() -> None:
    """GIVEN a page with a heading three times and a `#` line inside a fenced block WHEN its ids are collected
    THEN the repeats read -1 and -2, and the comment in the code block offers no id."""
    page = "# Page\n\n## Next\n\n## Next\n\n```bash\n# not a heading\n```\n\n## Next\n"
    assert anchors(page) == {"page", "next", "next-1", "next-2"}


def test_the_checker_reports_each_kind_of_broken_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN a page with a good link, a missing file, a missing anchor, a missing in-page anchor, a malformed URL
    and links that only look like links (in code) WHEN it is checked THEN exactly the four broken ones are reported,
    each naming what is wrong."""
    tmp_path = tmp_path.resolve()
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Other\n\n## Real heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[good](other.md#real-heading) [gone](missing.md) [no anchor](other.md#renamed-heading)\n"
        "[here](#page) [not here](#nowhere) ![pic](other.md) [web](https://example.com/x) [bad](http://)\n"
        "`[in code](missing.md)`\n\n```\n[in a block](missing.md)\n```\n"
    )
    found = [p for link in links(page) if (p := problem(link))]
    assert len(found) == 4, found
    assert any("missing.md does not exist" in p for p in found)
    assert any("'renamed-heading' in other.md" in p for p in found)
    assert any("'nowhere' in page.md" in p for p in found)
    assert any("'no host' is not a host name" in p for p in found)


# --- The committed pages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [rel(p) for p in pages()])
def test_every_link_points_somewhere_real(page: str) -> None:
    """GIVEN a page of the README or docs/ WHEN each relative link (images included) and each anchor is followed,
    and each external link is parsed THEN every file exists, every anchor is a heading there, every URL is
    well-formed."""
    broken = [p for link in links(ROOT / page) if (p := problem(link))]
    assert broken == [], "\n".join(broken)


def test_the_pages_are_linked_at_all() -> None:
    """GIVEN the README and the docs index WHEN their links are read THEN the checker sees links to check (a parser
    that found none would pass every page above)."""
    assert len(list(links(README))) >= 10
    assert len(list(links(DOCS / "README.md"))) >= 10


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    """GIVEN every Markdown page under docs/ WHEN links are followed from README.md THEN each page is reached,
    directly or through the docs index: a page nothing links to is a page nobody finds."""
    reached = reachable_from(README)
    orphans = [rel(p) for p in sorted(DOCS.rglob("*.md")) if p.resolve() not in reached]
    assert DOCS.joinpath("README.md").resolve() in reached
    assert orphans == [], f"not linked from README.md or docs/README.md: {orphans}"


def test_the_readme_stays_short() -> None:
    """GIVEN the README WHEN its lines are counted THEN it fits a screen or two; what a newcomer does not need first
    belongs on a task page under docs/."""
    lines = README.read_text().count("\n")
    assert 0 < lines < README_MAX_LINES, f"README.md has {lines} lines, over {README_MAX_LINES}: move some to docs/"
