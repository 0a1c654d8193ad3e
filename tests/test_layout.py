"""The house's shape, checked: small modules, folders of at most 15 modules, no import circle, the
layers of ``pyproject.toml``'s import contracts, and the other halves on the runtime's public
names only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The installed packages and their folders ([tool.setuptools] package-dir).
PACKAGES = {
    "runtime": "gpt2_edge.runtime",
    "exporter": "gpt2_edge.exporter",
    "serve": "gpt2_edge.serve",
    "pack": "gpt2_edge.pack",
    "batch": "gpt2_edge.batch",
}
MAX_MODULE_LINES = 400
MAX_FOLDER_MODULES = 15
# The halves that use the runtime through its public names only.
HALVES = ("serve", "pack", "batch")


def modules() -> list[Path]:
    return sorted(
        p for folder in PACKAGES if (ROOT / folder).is_dir() for p in (ROOT / folder).rglob("*.py")
    )


def test_modules_are_small_and_folders_few() -> None:
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in modules()}
    long = {name: n for name, n in lines.items() if n > MAX_MODULE_LINES}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines"
    crowded = {}
    for folder in {p.parent for p in modules()}:
        count = len(list(folder.glob("*.py")))
        if count > MAX_FOLDER_MODULES:
            crowded[str(folder.relative_to(ROOT))] = count
    assert crowded == {}, f"folders of more than {MAX_FOLDER_MODULES} modules"


def test_every_package_folder_is_installed() -> None:
    """A folder with an ``__init__.py`` that pyproject.toml does not list would be left out of
    a wheel (the editable install used by the tests would still find it)."""
    listed = (ROOT / "pyproject.toml").read_text()
    for init in (p for p in modules() if p.name == "__init__.py"):
        folder = init.parent.relative_to(ROOT)
        name = ".".join([PACKAGES[folder.parts[0]], *folder.parts[1:]])
        assert f'"{name}"' in listed, f"{name} is not in [tool.setuptools] packages"


def test_no_import_circle() -> None:
    grimp = pytest.importorskip("grimp")
    roots = [name for folder, name in PACKAGES.items() if (ROOT / folder).is_dir()]
    graph = grimp.build_graph(*roots, exclude_type_checking_imports=True, cache_dir=None)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(imports.get(module, ())):
            # A package's __init__ that re-exports its children is not a circle of modules.
            if module.startswith(imported + "."):
                continue
            if state.get(imported) == 1:
                return path[path.index(imported) :] + [imported]
            if imported in imports and imported not in state:
                found = visit(imported)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(imports):
        if module not in state:
            circle = visit(module)
            assert circle is None, " -> ".join(circle)


def test_import_contracts_hold() -> None:
    pytest.importorskip("importlinter")
    script = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [str(script), "--no-cache"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_halves_import_the_runtimes_public_names_only() -> None:
    import gpt2_edge.runtime as runtime

    public = set(runtime.__all__)
    found = []
    for module in (p for p in modules() if p.relative_to(ROOT).parts[0] in HALVES):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "gpt2_edge.runtime"
            ):
                names = {a.name for a in node.names}
                if node.module != "gpt2_edge.runtime" or not names <= public:
                    found.append(f"{module.relative_to(ROOT)}:{node.lineno} {node.module}")
            if isinstance(node, ast.Import):
                found += [
                    f"{module.relative_to(ROOT)}:{node.lineno} {a.name}"
                    for a in node.names
                    if a.name.startswith("gpt2_edge.runtime.")
                ]
    assert found == []
