"""The layering holds: brokers move bytes and import no job machinery; the package imports lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKERS = ROOT / "sqjobs" / "brokers"

#: Modules a broker may never import, at any level (function bodies included): the job machinery.
FORBIDDEN = {"job", "worker", "status", "schedule", "runtime", "cli", "web", "app", "producer", "middleware",
             "registry", "compat"}


def imported_modules(path: Path) -> set[str]:
    """Every ``sqjobs`` module ``path`` imports, resolved to a dotted name (TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text())
    package = "sqjobs.brokers"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("sqjobs"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
                if not node.module:  # from . import x / from .. import x
                    found.update(f"{module}.{alias.name}" for alias in node.names)
                    continue
            else:
                module = node.module or ""
            if module.startswith("sqjobs"):
                found.add(module)
    return found


def test_broker_modules_import_none_of_the_job_machinery() -> None:
    offenders = {}
    for path in sorted(BROKERS.glob("*.py")):
        bad = {name for name in imported_modules(path) if name.split(".")[1] in FORBIDDEN}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}, f"brokers importing job machinery: {offenders}"


def test_the_import_parser_sees_a_forbidden_import_when_there_is_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def later():\n    from ..job import registry\n    from . import base\n")
    assert "sqjobs.job" in imported_modules(sample) and "sqjobs.brokers.base" in imported_modules(sample)


def test_importing_the_embedded_broker_loads_no_job_machinery() -> None:
    code = ("import sys, sqjobs.brokers.sqlite; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('sqjobs'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT).stdout.split()
    assert "sqjobs.brokers.sqlite" in loaded
    assert not {name for name in loaded if name.split(".")[-1] in FORBIDDEN}, loaded


def test_the_package_still_offers_its_names_and_the_decorator_keeps_its_name() -> None:
    code = ("import sqjobs.job, sqjobs.registry; from sqjobs import job, registry, Job; "
            "from sqjobs.registry import Registry; "
            "print(callable(job) and not isinstance(job, type(sqjobs)), isinstance(registry, Registry))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["True", "True"]


def test_the_library_imports_nothing_of_django_or_its_integration() -> None:
    """contrib/django imports sqjobs, never the reverse: the core offers generic hooks instead."""
    offenders = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "sqjobs").rglob("*.py")
                       if any(name.split(".")[0] in ("django", "sqjobs_django") for name in all_imports(path)))
    assert offenders == []


def all_imports(path: Path) -> set[str]:
    """Every module ``path`` imports by absolute name, at any level."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


# -- no import cycle, imports inside functions counted ---------------------------------------------------------------

#: Where each importable package lives: sqjobs, and the two that import it (never imported by it).
PACKAGES = {"sqjobs": ROOT / "sqjobs", "sqjobsd": ROOT / "daemon",
            "sqjobs_django": ROOT / "contrib" / "django" / "sqjobs_django"}


def package_modules(packages: dict[str, Path] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` (a package is named by its ``__init__``)."""
    found: dict[str, Path] = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes that run only for type checkers (the body of ``if TYPE_CHECKING:``)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for statement in node.body:
                skipped.update(id(inner) for inner in ast.walk(statement))
    return skipped


def _resolve(level: int, module: str | None, package: str) -> str:
    """The absolute name of a (possibly relative) import of ``module`` made from inside ``package``."""
    if not level:
        return module or ""
    base = package.split(".")[:len(package.split(".")) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_import(node: ast.Call, package: str) -> str | None:
    """The module a call ``importlib.import_module("...")`` or ``__import__("...")`` names, if given literally."""
    function = ast.unparse(node.func)
    if function not in ("importlib.import_module", "import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None  # a name known only when it runs: the user's job modules, say
    name = first.value
    if name.startswith(".") and function != "__import__":
        level = len(name) - len(name.lstrip("."))
        anchor = node.args[1] if len(node.args) > 1 else next(
            (keyword.value for keyword in node.keywords if keyword.arg == "package"), None)
        if isinstance(anchor, ast.Constant) and isinstance(anchor.value, str):
            return _resolve(level, name[level:] or None, anchor.value)
        return _resolve(level, name[level:] or None, package)
    return name


def module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports at run time, anywhere in its text.

    Imports inside functions count, and so do ``importlib.import_module`` and
    ``__import__`` calls with a literal module name; imports under ``if
    TYPE_CHECKING:`` do not. ``from package import name`` counts as an import
    of ``package.name`` when that is a module, else of ``package``. A package's
    ``__init__`` that hands out names lazily (``_EXPORTS = {"Name": "module"}``)
    imports those modules.
    """
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped = _type_checking_only(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.level, node.module, package)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            targets.update(submodules)
            if len(submodules) < len(node.names):
                targets.add(base)
        elif isinstance(node, ast.Call):
            literal = _literal_import(node, package)
            if literal:
                targets.add(literal)
        elif (isinstance(node, ast.Assign) and path.name == "__init__.py"
              and any(isinstance(target, ast.Name) and target.id == "_EXPORTS" for target in node.targets)
              and isinstance(node.value, ast.Dict)):
            targets.update(f"{package}.{value.value}" for value in node.value.values
                           if isinstance(value, ast.Constant) and isinstance(value.value, str))
    return {target for target in targets if target in known and target != name}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules it imports (see :func:`module_imports`)."""
    known = set(modules)
    return {name: module_imports(name, path, known) for name, path in modules.items()}


def import_groups(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other (through others): the strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan's strongly connected components, without recursion
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(groups)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per group of :func:`import_groups`, as ``[a, b, ..., a]``: the shortest through its first module."""
    return [_shortest_cycle(graph, set(group), group[0]) for group in import_groups(graph)]


def _shortest_cycle(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """The shortest path ``start -> ... -> start`` inside ``group`` (breadth first)."""
    parents: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & group):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_no_module_imports_itself_back_through_others() -> None:
    """No import cycle in sqjobs, sqjobsd or sqjobs_django, counting imports inside functions.

    Optional dependencies (Flask, Django, boto3, prometheus_client) are not
    modules of these packages, so importing them where they are needed is not
    counted; neither are imports only type checkers see.
    """
    graph = import_graph(package_modules())
    found = [f"{' -> '.join(_shortest_cycle(graph, set(group), group[0]))}\n    (the group: "
             + "; ".join(f"{name} -> {', '.join(sorted(graph[name] & set(group)))}" for name in group) + ")"
             for group in import_groups(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_library_never_imports_the_daemon_or_the_django_integration() -> None:
    graph = import_graph(package_modules())
    offenders = {name: sorted(target for target in targets if target.split(".")[0] != "sqjobs")
                 for name, targets in graph.items() if name.split(".")[0] == "sqjobs"}
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_the_cycle_finder_sees_cycles_hidden_in_functions_and_dynamic_imports(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "__init__.py").write_text('_EXPORTS = {"Thing": "low"}\n')
    (folder / "low.py").write_text("def later():\n    from .high import x\n")
    (folder / "high.py").write_text("import importlib\nfrom typing import TYPE_CHECKING\nfrom . import low\n"
                                    "if TYPE_CHECKING:\n    from .typed import T\n"
                                    "def plugin(name):\n    return importlib.import_module(name)\n")
    (folder / "typed.py").write_text("from . import high\n")
    (folder / "dynamic.py").write_text("import importlib\ndef f():\n    importlib.import_module('pkg.typed')\n")
    graph = import_graph(package_modules({"pkg": folder}))
    assert graph == {"pkg": {"pkg.low"}, "pkg.low": {"pkg.high"}, "pkg.high": {"pkg.low"},
                     "pkg.typed": {"pkg.high"}, "pkg.dynamic": {"pkg.typed"}}
    assert import_cycles(graph) == [["pkg.high", "pkg.low", "pkg.high"]]
    (folder / "typed.py").write_text("from . import high\ndef later():\n    __import__('pkg.dynamic')\n")
    graph = import_graph(package_modules({"pkg": folder}))
    assert import_groups(graph) == [["pkg.dynamic", "pkg.typed"], ["pkg.high", "pkg.low"]]
    assert import_cycles(graph)[0] == ["pkg.dynamic", "pkg.typed", "pkg.dynamic"]


def _reached(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in graph[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


#: Modules below the application: handed an App (or what they need), they never import sqjobs.app (the default
#: application), nor the job class or the public cancel, which sit above it.
BELOW_THE_APP = ("producer", "worker.eager", "status.handle", "middleware.cancellation", "middleware.tracking",
                 "middleware.unique", "middleware.base", "middleware.metrics", "worker.execution", "worker.runner",
                 "schedule.later", "status.store", "registry", "message")
#: The worker side: the producer sends, it never runs a job (eager mode's run_now is plugged in by the app).
WORKER_SIDE = ("worker.runner", "worker.execution", "worker.eager", "worker.loop", "worker.jobprocess",
               "worker.inline")


def test_what_sits_below_the_application_never_reaches_up_to_it() -> None:
    graph = import_graph(package_modules())
    above = {"sqjobs.app", "sqjobs.job"}
    reaching = {name: sorted(_reached(graph, f"sqjobs.{name}") & above) for name in BELOW_THE_APP}
    assert {name: found for name, found in reaching.items() if found} == {}


def test_the_producer_does_not_import_the_worker_side() -> None:
    reached = _reached(import_graph(package_modules()), "sqjobs.producer")
    assert sorted(reached & {f"sqjobs.{name}" for name in WORKER_SIDE}) == []
