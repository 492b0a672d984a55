"""The code cites its contracts as `docs/design.md §N`, and every cited section exists
there (the design document outside the repository is not something a reader has)."""

import re

from tests.conftest import REPO

FOLDERS = ("services", "shared", "config", "docs", "deploy", "bench", "tests")
SUFFIXES = {".py", ".yaml", ".yml", ".md", ".sh", ".j2", ".json"}


def _files() -> list:
    out = [REPO / "README.md"]
    for folder in FOLDERS:
        out += [p for p in (REPO / folder).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    return [p for p in out if p.name != "design.md" and "/results/" not in str(p)]


def test_citations_name_docs_design_md_and_its_sections_exist() -> None:
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\.", design, re.M))
    old_style = re.compile("DESIGN" + r"(?: §|\.md)")  # split so this file does not match itself
    stale, missing = [], []
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        if old_style.search(text):
            stale.append(str(path.relative_to(REPO)))
        missing += [
            f"{path.relative_to(REPO)}: §{n}" for n in re.findall(r"docs/design\.md §(\d+)", text) if n not in sections
        ]
    assert not stale, f"cite docs/design.md §N instead: {stale}"
    assert not missing, missing
