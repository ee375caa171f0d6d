"""Names a package exports without importing their modules until first used (PEP 562's module ``__getattr__``).

A package's ``__init__`` declares ``_EXPORTS`` (public name -> the module of
the package that defines it) and sets ``__getattr__ = exporter(__name__,
_EXPORTS)``, so that importing one module of the package does not load the
others; ``tests/test_layering.py`` counts those names as imports.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def exporter(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: each name in ``exports`` read from its module when first used."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
