"""Services meet only through `shared/` and messages: no module in services/<a>/ imports
services/<b>/. The top-level modules of services/ (cli.py, runner.py, demo.py …) are the
composition root and may wire any service.

KNOWN lists the crossings that exist today, each a debt to pay off: a new crossing fails
this test, and so does an entry that is gone (the list stays exact)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"

#: (importing module, imported module of another service)
KNOWN: set[tuple[str, str]] = set()


def _imported(tree: ast.AST) -> list[str]:
    """Modules absolute imports load (`from services.a import b` → services.a.b, as b may be a module)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.count(".") <= 1:
                names += [f"{node.module}.{a.name}" for a in node.names]
            else:
                names.append(node.module)
    return names


def crossings(root: Path = SERVICES) -> set[tuple[str, str]]:
    services = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    found = set()
    for path in sorted(root.glob("*/**/*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        own = rel.parts[1]
        for name in _imported(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            parts = name.split(".")
            if parts[0] == root.name and len(parts) >= 2 and parts[1] in services and parts[1] != own:
                found.add((".".join(rel.parts), ".".join(parts[:3])))
    return found


def test_no_service_imports_another() -> None:
    new = sorted(crossings() - KNOWN)
    assert not new, f"a service imports another service (meet through shared/ or a message instead): {new}"


def test_known_crossings_still_exist() -> None:
    gone = sorted(KNOWN - crossings())
    assert not gone, f"gone, remove them from KNOWN in tests/unit/{Path(__file__).name}: {gone}"


def test_a_crossing_is_seen(tmp_path: Path) -> None:
    root = tmp_path / "services"
    for pkg in ("a", "b"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "cli.py").write_text("from services.a import x\n")  # composition root: fine
    (root / "a" / "x.py").write_text("from services.a.y import z\nimport shared.models\n")  # own service: fine
    (root / "a" / "y.py").write_text("def f():\n    from services.b.store import S\n")  # a crossing
    (root / "b" / "w.py").write_text("from services import a\nfrom services.a import y\n")  # two crossings
    assert crossings(root) == {
        ("services.a.y", "services.b.store"),
        ("services.b.w", "services.a"),
        ("services.b.w", "services.a.y"),
    }
