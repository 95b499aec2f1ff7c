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
    """torch, jittor, jax and flax are imported only inside functions (a worker picks one),
    never when a bench module is imported."""
    bad = []
    for path, _, _ in _modules():
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("torch", "jittor", "jax", "flax", "optax")]
    assert not bad, bad


# --------------------------------------------------------------------------- import cycles
#
# No two modules of the project import each other, directly or through a chain, counting
# imports inside functions (they only postpone the cycle to run time). The graph: one node per
# module of the project's roots (packages and scripts), one edge per import statement anywhere
# in a module (ast.walk: top level, functions, classes, try/if blocks), resolved to the
# deepest project module it names (`from bench.gate import ab` -> bench.gate.ab, `from
# bench.gate.ab import Result` -> bench.gate.ab, relative imports resolved against the
# package). Importing a submodule runs its parent packages' __init__ first; that is Python's
# order, not a dependency of the parent on the child, so no edge is added for it. Cycles are
# the strongly connected components of the graph (Tarjan) with more than one module; each is
# reported as one concrete chain of imports with the file and line of every step.

REPO = BENCH.parent
PROJECT_ROOTS = ("bench", "models", "tools", "harness.py")


def project_modules(root, roots=PROJECT_ROOTS):
    """{dotted module name: (path, package it resolves relative imports against)} for every
    .py file under the roots (a root is a folder or a single script)."""
    out = {}
    for r in roots:
        base = root / r
        paths = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in paths:
            rel = path.relative_to(root).with_suffix("")
            name = ".".join(rel.parts)
            if path.name == "__init__.py":
                name = name.removesuffix(".__init__")
                package = name
            else:
                package = name.rsplit(".", 1)[0] if "." in name else ""
            out[name] = (path, package)
    return out


def _resolve(name, modules, script_dir=None):
    """The project module a dotted name stands for: the longest prefix of it that is a
    project module (`bench.gate.ab.Result` -> bench.gate.ab); from a script's folder (no
    __init__.py: it is on sys.path when the script runs) a sibling script comes first."""
    parts = name.split(".")
    if script_dir is not None and f"{script_dir}.{parts[0]}" in modules:
        parts = script_dir.split(".") + parts
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def _import_targets(path, package, modules, script_dir=None):
    """(line, project module) for every import statement anywhere in a file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, _resolve(alias.name, modules, script_dir)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1]
                                + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # `from pkg import sub` imports the submodule; `from pkg import name`, pkg
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in modules else _resolve(base, modules,
                                                                         None if node.level
                                                                         else script_dir)


def import_graph(root, roots=PROJECT_ROOTS):
    """{module: {imported project module: (path, line) of the first such import}}."""
    modules = project_modules(root, roots)
    graph = {name: {} for name in modules}
    for name, (path, package) in modules.items():
        script_dir = None if (path.parent / "__init__.py").exists() else package
        for line, target in _import_targets(path, package, modules, script_dir):
            if target is not None and target != name:
                graph[name].setdefault(target, (path.relative_to(root), line))
    return graph


def strongly_connected(graph):
    """Tarjan's algorithm, iterative (no recursion limit): the components, each a list."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(sorted(component))
    return out


def _chain(graph, component):
    """One cycle through a component, as [m0, m1, ..., m0] (breadth-first back to m0)."""
    members, first = set(component), component[0]
    parent, queue = {first: None}, [first]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node]):
            if child == first:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1] + [first]
            if child in members and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {component}")  # pragma: no cover


def import_cycles(graph):
    """Every cycle, one line each: 'a -> b (a.py:3) -> a (b.py:7)'."""
    lines = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        chain = _chain(graph, component)
        steps = [chain[0]]
        for a, b in zip(chain, chain[1:]):
            path, line = graph[a][b]
            steps.append(f"{b} ({path}:{line})")
        lines.append(" -> ".join(steps) + f"   [{len(component)} modules in the cycle: "
                     f"{', '.join(component)}]")
    return lines


def test_no_import_cycles():
    cycles = import_cycles(import_graph(REPO))
    assert not cycles, "import cycles between project modules:\n" + "\n".join(cycles)


def test_the_cycle_check_sees_a_planted_cycle(tmp_path):
    """A temporary package with a cycle hidden in a function, through three modules, beside
    modules that import each other only one way: the checker names that cycle, only it."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .c import thing\n")
    (pkg / "a.py").write_text("import os\nfrom pkg import b\n")
    (pkg / "b.py").write_text("from pkg.sub.c import thing\n")
    (pkg / "sub" / "c.py").write_text("thing = 1\n\ndef f():\n    from ..a import x\n")
    (pkg / "d.py").write_text("from pkg.a import x\nimport pkg.sub\n")   # one way only
    (tmp_path / "script.py").write_text("import pkg.d\n")
    graph = import_graph(tmp_path, ("pkg", "script.py"))
    assert graph["pkg.sub.c"] == {"pkg.a": (pkg.relative_to(tmp_path) / "sub" / "c.py", 4)}
    assert set(graph["script"]) == {"pkg.d"} and set(graph["pkg.d"]) == {"pkg.a", "pkg.sub"}
    cycles = import_cycles(graph)
    assert len(cycles) == 1, cycles
    assert cycles[0].startswith("pkg.a -> pkg.b (pkg/a.py:2) -> pkg.sub.c (pkg/b.py:1) -> "
                                "pkg.a (pkg/sub/c.py:4)"), cycles
    # two modules importing each other at the top level: a cycle of two
    (pkg / "e.py").write_text("import pkg.f\n")
    (pkg / "f.py").write_text("from . import e\n")
    assert len(import_cycles(import_graph(tmp_path, ("pkg",)))) == 2
