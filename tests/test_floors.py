"""The layout's promises (docs/design.md §3), read from the code's own imports: every import points down a
floor, the engine imports no server, host, command line or research world, nothing imports the command line,
and the part of the engine the client wheel ships imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "kvlock": ROOT / "kvlock",
    "kvlock_server": ROOT / "server" / "kvlock_server",
    "kvlock_cli": ROOT / "server" / "kvlock_cli",
}
PACKAGES = ("kvlock", "kvlock_server", "kvlock_cli", "kvlock_bridge", "kvlock_resolve", "kvlock_wire")

# the engine's floors, lowest first; a module may import its own floor and those below it
ENGINE_FLOORS = [
    {"errors", "settings", "progress", "media"},
    {"lock", "trace", "plate"},
    {"families"},
    {"sampling", "loading"},
    {"execution"},
    {"editing"},
    {"calibration", "__init__"},
    {"world"},
]
SERVER_FLOORS = [{"jobs"}, {"executors"}, {"rpc"}, {"app", "__init__"}]
CLIENT_SAFE = [
    "kvlock.errors",
    "kvlock.settings",
    "kvlock.progress",
]  # with kvlock.media.*: installers/client_wheel.py ships them


def modules(package: str) -> dict[str, Path]:
    folder = SOURCES[package]
    found = {}
    for path in folder.rglob("*.py"):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] or ["__init__"]
        found[".".join([package, *parts]) if parts != ["__init__"] else package] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; relative imports resolved), at any depth of the file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # from . import module
    return out


def floor(name: str, floors: list[set[str]], top: str) -> int | None:
    parts = name.split(".")
    if parts[0] != top:
        return None
    key = parts[1] if len(parts) > 1 else "__init__"
    return next((i for i, names in enumerate(floors) if key in names), None)


def edges(package: str) -> list[tuple[str, str]]:
    return [(name, target) for name, path in modules(package).items() for target in imports(name, path)]


def test_every_engine_module_has_a_floor():
    unplaced = {n.split(".")[1] for n in modules("kvlock") if floor(n, ENGINE_FLOORS, "kvlock") is None}
    assert not unplaced, f"modules of the engine on no floor: {sorted(unplaced)} (place them in ENGINE_FLOORS)"


@pytest.mark.parametrize(("package", "floors"), [("kvlock", ENGINE_FLOORS), ("kvlock_server", SERVER_FLOORS)])
def test_imports_point_down_or_across_a_floor_never_up(package, floors):
    up = [
        f"{a} -> {b}"
        for a, b in edges(package)
        if (fa := floor(a, floors, package)) is not None and (fb := floor(b, floors, package)) is not None and fb > fa
    ]
    assert not up, "imports that point back up:\n" + "\n".join(sorted(up))


def test_the_engine_imports_no_server_host_command_line_or_world():
    banned = ("kvlock_server", "kvlock_cli", "kvlock_bridge", "kvlock_resolve", "grpc", "bpy", "kvlock.world")
    found = [f"{a} -> {b}" for a, b in edges("kvlock") if not a.startswith("kvlock.world") and b.startswith(banned)]
    assert not found, "\n".join(sorted(found))


def test_the_server_imports_neither_the_command_line_nor_the_world():
    found = [f"{a} -> {b}" for a, b in edges("kvlock_server") if b.startswith(("kvlock_cli", "kvlock.world"))]
    assert not found, "\n".join(sorted(found))


def test_nothing_imports_the_command_line():
    sources = [
        p
        for folder in (ROOT / "kvlock", ROOT / "server" / "kvlock_server", ROOT / "plugins")
        for p in folder.rglob("*.py")
    ]
    found = [str(p.relative_to(ROOT)) for p in sources if "kvlock_cli" in p.read_text()]
    assert not found, found


def test_the_client_wheels_part_of_the_engine_imports_no_torch():
    media = sorted(n for n in modules("kvlock") if n.startswith("kvlock.media."))
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['diffusers'] = None\n"
        f"import importlib\nfor name in {CLIENT_SAFE + media!r}: importlib.import_module(name)\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
