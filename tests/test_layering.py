"""The layering rules, checked on the source (the spirit of test_exports.py).

* The sans-IO core (``meshgate/_node``) imports no trio and no module above it.
* The client protocol (``meshgate/client/_protocol.py``) imports no trio, no I/O, no clock.
* Only the shell, the game layer and the testing harnesses import ``meshgate._node``.
* The game layer (``meshgate/_game/``) uses only the hooks, the protocol layer (its
  messages are ``meshgate.protocol.game``) and the input router.
* Outside the core, no module touches another module's private names: ``obj._x`` is
  allowed only where ``_x`` is defined in the same module.
* Tests import only public modules and touch no private names of meshgate objects.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "meshgate"
TESTS = Path(__file__).resolve().parent

#: names that look private but are public API of the standard library (namedtuple)
STDLIB = {"_make", "_asdict", "_replace", "_fields"}

#: the shell's parts that know the core (the dialers do not: they get a topology view)
MAY_IMPORT_CORE = {
    "_shell/_gateway.py",
    "_shell/_driver.py",
    "_shell/_writer.py",
    "_shell/_topology.py",
    "_shell/_observer.py",
    "_shell/_logbook.py",
    "_shell/_ticks.py",
    "_game/",  # the game layer: every module of the package
    "testing/_sim.py",
    "testing/_harness.py",
}


def modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def in_set(name: str, entries: set[str]) -> bool:
    """``name`` is one of ``entries``, or in a package one of them names (``pkg/``)."""
    return any(name == e or (e.endswith("/") and name.startswith(e)) for e in entries)


def rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def imported(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    if path.is_relative_to(SRC):
        package = ["meshgate", *path.relative_to(SRC).parent.parts]
    else:
        package = ["tests", *path.relative_to(TESTS).parent.parts]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def own_private_names(tree: ast.Module) -> set[str]:
    """``_names`` a module defines: functions, classes, attributes, slots, keywords."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return {n for n in names if n.startswith("_")}


def foreign_private_uses(path: Path, allowed: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    own = own_private_names(tree) | allowed | STDLIB
    return [
        f"{path.name}:{node.lineno} .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in own
    ]


@pytest.mark.parametrize("path", [p for p in modules() if rel(p).startswith("_node/")], ids=rel)
def test_core_imports_no_io_and_nothing_above_it(path: Path) -> None:
    for name in imported(path):
        assert not name.startswith(("trio", "socket", "ssl", "time", "asyncio")), name
        for upper in ("_shell", "_game", "client", "replicant", "monitor", "transports", "testing"):
            assert not name.startswith(f"meshgate.{upper}"), name


def test_client_protocol_is_sans_io() -> None:
    """``client/_protocol.py`` (every transport's client) imports no I/O, no clock."""
    for name in imported(SRC / "client" / "_protocol.py"):
        assert not name.startswith(("trio", "socket", "ssl", "time", "asyncio")), name
        assert not name.startswith(
            ("meshgate._node", "meshgate.transports", "meshgate.client._client")
        ), name


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_only_the_shell_layer_and_harnesses_import_the_core(path: Path) -> None:
    if rel(path).startswith("_node/"):
        return
    uses_core = any(n.startswith("meshgate._node") for n in imported(path))
    assert not uses_core or in_set(rel(path), MAY_IMPORT_CORE)


@pytest.mark.parametrize("path", sorted((SRC / "_game").rglob("*.py")), ids=rel)
def test_game_layer_depends_only_on_the_hooks_and_protocol_layers(path: Path) -> None:
    allowed = (
        "meshgate._game",  # its own package
        "meshgate._node",
        "meshgate._reserved",
        "meshgate._errors",
        "meshgate.authority",
        "meshgate.protocol",
        "meshgate.subjects",
        "meshgate.config",
    )
    for name in imported(path):
        if name.startswith("meshgate."):
            assert name.startswith(allowed), name


def test_the_game_messages_are_protocol_layer() -> None:
    """``meshgate.protocol.game`` is below the core, the game layer, the client and the
    replicants that all use it: it imports no module above the protocol layer."""
    allowed = ("meshgate.protocol", "meshgate._reserved", "meshgate._errors", "meshgate.subjects")
    for name in imported(SRC / "protocol" / "game.py"):
        if name.startswith("meshgate"):
            assert name.startswith(allowed), name
        assert not name.startswith(("trio", "socket", "ssl", "time", "asyncio")), name


@pytest.mark.parametrize("path", [p for p in modules() if not rel(p).startswith("_node/")], ids=rel)
def test_no_module_outside_the_core_touches_foreign_private_names(path: Path) -> None:
    assert foreign_private_uses(path, set()) == []


def test_the_driver_imports_no_trio() -> None:
    """The harness and the simulator run the shell's driver: no trio, no I/O, no clock."""
    for name in imported(SRC / "_shell" / "_driver.py"):
        assert not name.startswith(("trio", "socket", "ssl", "time", "asyncio")), name


def test_only_the_writer_sets_connection_handle_fields() -> None:
    """``ConnHandle`` (and a connection's ``shell`` slot) belong to the writer."""
    writer = SRC / "_shell" / "_writer.py"
    (cls,) = [
        n
        for n in ast.walk(ast.parse(writer.read_text()))
        if isinstance(n, ast.ClassDef) and n.name == "ConnHandle"
    ]
    fields = {
        e.value
        for n in ast.walk(cls)
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__slots__" for t in n.targets)
        for e in ast.walk(n.value)
        if isinstance(e, ast.Constant)
    }
    assert {"closed", "idle", "writing", "deferred", "backlog", "drained"} <= fields
    for path in modules():
        if path == writer or rel(path).startswith("_node/"):
            continue
        stores = {
            n.attr
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
        }
        assert "shell" not in stores, rel(path)
        if rel(path).startswith("_shell/"):
            assert not stores & fields, (rel(path), stores & fields)


@pytest.mark.parametrize("path", sorted((SRC / "_shell").glob("*.py")), ids=rel)
def test_the_shell_is_composed_not_inherited(path: Path) -> None:
    """No mixins: every class of the shell stands alone (a Protocol at most), and none
    is over 500 lines."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            assert bases in ([], ["Protocol"]), (node.name, bases)
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno < 500, node.name


@pytest.mark.parametrize(
    "path", sorted(TESTS.rglob("*.py")), ids=lambda p: p.relative_to(TESTS).as_posix()
)
def test_tests_use_public_names_only(path: Path) -> None:
    for name in imported(path):
        parts = name.split(".")
        if parts[0] == "meshgate":
            assert not any(p.startswith("_") for p in parts[1:]), name
    assert foreign_private_uses(path, set()) == []
