"""The layering holds: brokers move bytes and import no job machinery; the package imports lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKERS = ROOT / "sqjobs" / "brokers"

#: Modules a broker may never import, at any level (function bodies included): the job machinery.
FORBIDDEN = {"job", "worker", "status", "store", "runtime", "execution", "beater", "cli", "app", "producer",
             "runner", "jobprocess", "tracking", "middleware", "registry", "healthfile", "seed"}


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
