"""The shape of the house, checked so it stays true (ARCHITECTURE.md, "Layout").

Imports run one way: storage <- contract <- bot <- channels <- service. Nothing imports
upward, no modules import each other in a loop, and no import of ours hides inside a
function. A channel reaches the domain only through its port (``bot.port``) and a few
pure helpers, and never touches SQLAlchemy or the store. A complaint's status names are
written out in one module only. A product module passes ~400 lines only with a reason
in its docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("storage", "contract", "bot", "channels", "service")
# What a channel may use of the domain: the port, and helpers that hold no state and reach
# no store (text folding, tracking codes, masking for logs, the catalogue, the clock).
CHANNEL_MAY_USE = ("bot.port", "bot.tracking", "bot.folding", "bot.logs", "bot.texts", "bot.clock", "bot.metrics")
STATUS_NAMES = {"new", "assigned", "answered", "resolved", "reopened", "closed"}
# Where a status name may be written out, and why.
STATUS_LITERALS_ALLOWED = {
    "bot/statuses.py": "the one home of the statuses",
    # GeoReport v2's own two statuses, "open" and "closed", are Open311's words, not ours.
    "channels/web/georeport.py": "GeoReport v2's vocabulary",
}
MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    """Every product module by dotted name (migrations are history, not product code)."""
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _ours(name: str) -> bool:
    return name.split(".")[0] in LAYERS


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, at module level?) for each import of ours in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from bot import intake" imports the module bot.intake when there is one.
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        for name in names:
            if _ours(name) or name.split(".")[0] == "sqlalchemy":
                out.append((name, id(node) in top))
    return out


def _layer(name: str) -> int:
    return LAYERS.index(name.split(".")[0])


def test_the_house_is_read_whole():
    assert len(MODULES) > 60
    assert {"bot.port", "contract.messages", "service.app", "storage.models", "channels.sms.webhook"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    """A module imports its own layer or lower ones, and nothing of ours inside a function."""
    problems = []
    for name, at_top in _imports(MODULES[module]):
        if not _ours(name):
            continue
        if not at_top:
            problems.append(f"imports {name} inside a function")
        if _layer(name) > _layer(module):
            problems.append(f"imports {name}, a layer above it")
        if module.startswith("contract") and not name.startswith("contract"):
            problems.append(f"imports {name}: the contract imports nothing of ours")
    assert problems == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("channels.")))
def test_a_channel_reaches_the_domain_only_through_its_port(module):
    problems = []
    for name, _ in _imports(MODULES[module]):
        if name.startswith(("sqlalchemy", "storage")):
            problems.append(f"{name}: a channel never holds a database session")
        elif name.startswith("bot") and not name.startswith(CHANNEL_MAY_USE):
            problems.append(f"{name}: not the port")
        elif name.startswith("channels.") and name.split(".")[1] != module.split(".")[1]:
            problems.append(f"{name}: another channel")
    assert problems == []


def test_no_modules_import_each_other_in_a_loop():
    graph = {module: {name for name, _ in _imports(path) if name in MODULES and name != module}
             for module, path in MODULES.items()}
    # A package's __init__ that hands names on is part of the package, not a loop with it.
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert loops == []


def test_a_status_name_is_written_out_in_one_module():
    found = []
    for module, path in MODULES.items():
        where = path.relative_to(ROOT).as_posix()
        if where in STATUS_LITERALS_ALLOWED:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in STATUS_NAMES:
                found.append(f"{where}:{node.lineno} {node.value!r}")
    assert found == []


def test_the_status_check_in_the_store_names_exactly_the_statuses():
    from bot.statuses import FINISHED, OPEN, RATEABLE, Status

    # The newest migration that writes the status CHECK holds the list in force.
    migration = sorted(path for path in (ROOT / "storage/migrations/versions").glob("*.py")
                       if "STATUSES = " in path.read_text(encoding="utf-8"))[-1].read_text(encoding="utf-8")
    tree = ast.parse(migration)
    [listed] = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "STATUSES"]
    assert set(ast.literal_eval(listed)) == {status.value for status in Status}
    assert OPEN | FINISHED == set(Status) and not OPEN & FINISHED and RATEABLE <= FINISHED


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_over_400_lines_says_why(module):
    text = MODULES[module].read_text(encoding="utf-8")
    lines = text.count("\n")
    if lines <= MODULE_LINES:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert "lines" in docstring and "long" in docstring, (
        f"{module} has {lines} lines; split it, or say in its docstring why it is long")
