"""bench/ is layered (bench/__init__.py LAYERS, docs/ARCHITECTURE.md): a module imports from
its own layer and the layers below, never above, not even inside a function. Parsed with ast,
so a forbidden import fails here whether or not a test ever executes it."""
import ast
from pathlib import Path

import bench

BENCH = Path(bench.__file__).parent
RANK = {layer: i for i, layer in enumerate(bench.LAYERS)}


def _layer(module):
    """'bench.run.config' -> 'run'; None for modules outside bench's layers."""
    parts = module.split(".")
    return parts[1] if parts[0] == "bench" and len(parts) > 1 and parts[1] in RANK else None


def _imports(path, package):
    """(line, imported module) for every import in a file, relative ones resolved."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from bench import run` imports the layer bench.run
                yield node.lineno, f"{module}.{alias.name}"


def _modules():
    for path in sorted(BENCH.rglob("*.py")):
        rel = path.relative_to(BENCH.parent).with_suffix("")
        name = ".".join(rel.parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        yield path, name.removesuffix(".__init__"), package


def test_every_module_is_in_a_layer():
    loose = [name for _, name, _ in _modules() if name != "bench" and _layer(name) is None]
    assert not loose, f"modules outside bench's layers {bench.LAYERS}: {loose}"


def test_imports_only_go_down():
    upward = []
    for path, name, package in _modules():
        own = _layer(name)
        if own is None:
            continue
        for line, module in _imports(path, package):
            target = _layer(module)
            if target is not None and RANK[target] > RANK[own]:
                upward.append(f"{path.relative_to(BENCH.parent)}:{line}: {own} imports "
                              f"{module} ({target} is above {own})")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser must catch the forms we use: plain, from-import, inside a function."""
    src = tmp_path / "m.py"
    src.write_text("import bench.gate.compare\n"
                   "def f():\n    from bench.run import runner\n"
                   "from bench import tasks\n")
    found = {m for _, m in _imports(src, "bench.records")}
    assert {"bench.gate.compare", "bench.run", "bench.run.runner", "bench.tasks"} <= found
    assert {_layer(m) for m in found if _layer(m)} == {"gate", "run", "tasks"}


def test_no_framework_at_module_level():
    """torch and jittor are imported only inside functions (a worker picks one), never when
    a bench module is imported."""
    bad = []
    for path, _, _ in _modules():
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("torch", "jittor")]
    assert not bad, bad
