"""The house rules of the layout: every import points down the data flow, no module is over
400 lines, and no two modules import each other (directly or round a longer circle).

Read from the source with ``ast`` (lazy imports inside functions count too: a circle that only
closes at run time is still a circle a newcomer has to hold in their head).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ess_tui"

#: room -> the rooms it may import (besides itself). Faces are the top-level modules.
ALLOWED: dict[str, set[str]] = {
    "engine": set(),
    "config": {"engine"},
    "logs": {"engine"},
    "store": {"engine"},
    "market": {"engine"},
    "gate": {"engine", "store"},
    "venues.paper": {"engine", "market"},
    "venues.ccxt": {"engine", "market", "config"},
    "venues": {"engine"},
    "alerts": {"engine", "store", "config", "market"},
    "runtime": {"engine", "store", "market", "venues", "venues.paper", "venues.ccxt", "alerts",
                "config", "gate", "logs"},
    "testing": {"engine", "store", "market", "venues", "venues.paper", "runtime", "config", "gate"},
    "tui": {"engine", "store", "market", "venues", "venues.paper", "runtime", "alerts", "config",
            "gate", "logs"},
    "cli": {"engine", "store", "market", "venues", "venues.paper", "venues.ccxt", "runtime",
            "alerts", "config", "gate", "logs", "tui", "bench", "testing"},
    "bench": {"engine", "store", "market", "venues", "venues.paper", "venues.ccxt", "runtime",
              "alerts", "config", "gate", "logs", "tui", "testing"},
    "main": {"cli"},
    "themes": set(),
}

MAX_LINES = 400


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str | None:
    parts = module.split(".")[1:]
    if not parts:
        return None  # ess_tui/__init__.py: the seed's names, a face over everything
    if parts[0] == "venues" and len(parts) > 1 and parts[1] in ("paper", "ccxt"):
        return f"venues.{parts[1]}"
    if parts[0] == "__main__":
        return "main"
    if parts[0] == "cli" or parts[0].startswith("cli_"):
        return "cli"
    if parts[0].startswith("config"):
        return "config"
    return parts[0]


def _drop_type_checking_blocks(tree: ast.Module) -> None:
    """Remove ``if TYPE_CHECKING:`` bodies: a type-only import is not an arrow at run time."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        node.body = [
            child for child in body
            if not (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
        ] or [ast.Pass()]


def imports_of(path: Path, *, runtime_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if runtime_only:
        _drop_type_checking_blocks(tree)
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ess_tui"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("ess_tui"):
                found.add(name)
                for alias in node.names:  # `from ess_tui.store import audit_chain` names a module
                    candidate = f"{name}.{alias.name}"
                    if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() or (
                        PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                    ).exists():
                        found.add(candidate)
    found.discard(me)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_at_most_400_lines() -> None:
    long = {
        module_name(p): n
        for p in MODULES
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines (split by idea): {long}"


def test_every_import_points_down() -> None:
    wrong: list[str] = []
    for path in MODULES:
        me = module_name(path)
        mine = room_of(me)
        if mine is None:
            continue
        assert mine in ALLOWED, f"{me}: room {mine!r} is not in the layout table"
        for target in sorted(imports_of(path)):
            theirs = room_of(target)
            if theirs is None:
                wrong.append(f"{me} imports the top-level package ess_tui")
            elif theirs != mine and theirs not in ALLOWED[mine]:
                wrong.append(f"{me} ({mine}) imports {target} ({theirs})")
    assert wrong == [], "imports pointing up or sideways:\n" + "\n".join(wrong)


def test_no_import_circle() -> None:
    # Lazy imports inside functions count (a circle that closes at run time is still a circle);
    # type-only imports under ``if TYPE_CHECKING:`` do not (a mixin naming its host class).
    graph = {module_name(p): imports_of(p, runtime_only=True) for p in MODULES}
    known = set(graph)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m} for m, ts in graph.items()}
    # A package's __init__ re-exporting its own modules is not a circle with them.
    def is_reexport(a: str, b: str) -> bool:
        return b.startswith(a + ".") or a.startswith(b + ".")

    circles: list[str] = []
    for a, targets in edges.items():
        for b in targets:
            if a < b and a in edges.get(b, set()) and not is_reexport(a, b):
                circles.append(f"{a} <-> {b}")
    # Longer circles: a depth-first search over the non-re-export edges.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if is_reexport(node, nxt):
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                if len(cycle) > 3:
                    circles.append(" -> ".join(cycle))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert circles == [], "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize("module", ["ess_tui.gate", "ess_tui"])
def test_light_imports_stay_light(module: str) -> None:
    import subprocess
    import sys

    heavy = ["ccxt", "textual", "aiosqlite", "pydantic", "apprise", "prometheus_client", "psycopg",
             "asyncpg"]
    code = (
        f"import sys, {module}\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} pulled in: {out.stdout.strip()}"
