"""The import structure: no cycles, kernels a leaf, no private names across sub-packages.

Read from the source with `ast` (module-level imports: those that run when a module is imported;
imports inside functions are deliberate lazy ones and do not form import-time cycles), plus one
real import of the kernels with `vos` blocked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the sub-packages along the data flow and beside it; top-level modules (vos.config, vos.demo,
# vos.errors, …) are glue that several of them share
PACKAGES = {"app", "bench", "data", "deploy", "eval", "kernels", "losses", "memory", "model", "train"}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (ROOT / "vos").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "kernels").glob("*.py"):  # installed as vos.kernels
        mods["vos.kernels" if path.stem == "__init__" else f"vos.kernels.{path.stem}"] = path
    return mods


def _module_level_imports(module: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, str]]:
    """(imported module, imported name or "") for every import that runs at import time."""
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    found: list[tuple[str, str]] = []

    def resolve(name: str) -> str:
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                if base.startswith("vos"):
                    for alias in node.names:
                        full = f"{base}.{alias.name}"
                        found.append((full, "") if full in mods else (resolve(base), alias.name))
            elif isinstance(node, ast.Import):
                found.extend((resolve(a.name), "") for a in node.names if a.name.startswith("vos"))
            for field in ("body", "orelse", "handlers", "finalbody"):
                if not isinstance(node, ast.ClassDef) or field == "body":
                    visit(getattr(node, field, []))

    visit(ast.parse(path.read_text()).body)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {t for t, _ in _module_level_imports(m, p, mods) if t != m} for m, p in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else None


def test_no_import_cycle_between_modules():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"] and _cycle({"a": {"b"}, "b": set()}) is None
    graph = _graph()
    assert len(graph) > 80 and "vos.kernels.memory_read" in graph and "vos.app.server" in graph  # the whole tree was read
    assert _cycle(graph) is None, " → ".join(_cycle(graph))


def test_no_cycle_between_sub_packages():
    """model → memory → (eval, app) and data → losses → train: each layer imports only those below it."""
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        for target in targets:
            a, b = _package(module), _package(target)
            if a and b and a != b:
                packages[a].add(b)
    assert _cycle(packages) is None, " → ".join(_cycle(packages))
    assert "memory" not in packages["model"] and "losses" not in packages["data"]  # the two cycles once found


def test_no_private_name_is_imported_across_sub_packages():
    mods = _modules()
    offenders = []
    for module, path in mods.items():
        for target, name in _module_level_imports(module, path, mods):
            private = name.startswith("_") or any(part.startswith("_") and part != "__init__" for part in target.split("."))
            if private and _package(module) != _package(target):
                offenders.append(f"{module} imports {target}{'.' + name if name else ''}")
    assert offenders == []


def test_kernels_import_torch_triton_and_themselves_only():
    mods = _modules()
    for module, path in mods.items():
        if module.startswith("vos.kernels"):
            tree = ast.parse(path.read_text())
            roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module}
            allowed = {"torch", "triton", "__future__"} | set(sys.stdlib_module_names)
            assert roots <= allowed, f"{path.name} imports {sorted(roots - allowed)}"
    # and for real: the folder imports as a package of its own with vos unimportable
    names = sorted(p.stem for p in (ROOT / "kernels").glob("*.py") if p.stem != "__init__")
    script = (
        "import importlib, importlib.util, sys\n"
        "sys.modules['vos'] = None\n"
        f"spec = importlib.util.spec_from_file_location('kernels', {str(ROOT / 'kernels' / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(ROOT / 'kernels')!r}])\n"
        "package = importlib.util.module_from_spec(spec); sys.modules['kernels'] = package; spec.loader.exec_module(package)\n"
        f"for name in {names!r}: importlib.import_module('kernels.' + name)\n"
        "assert not any(m == 'vos' or m.startswith('vos.') for m in sys.modules if sys.modules[m] is not None)\n"
        "print('leaf', len(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and result.stdout.startswith("leaf"), result.stderr[-2000:]


def test_bench_scripts_are_entry_points_over_vos_bench():
    """Each `bench/<name>.py` only imports `vos.bench.<name>` and calls it: the code, and so the
    flags, live once. Its --help is that module's parser (argparse names the script)."""
    for script in sorted((ROOT / "bench").glob("*.py")):
        tree = ast.parse(script.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imported == {"pathlib", f"vos.bench.{script.stem}"}, (script.name, imported)
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        assert not functions, f"{script.name} defines {[f.name for f in functions]}: move it into vos.bench"
        help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT)
        assert help_text.returncode == 0 and "--out" in help_text.stdout, (script.name, help_text.stderr[-500:])
