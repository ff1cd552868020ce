"""Package attributes imported when first used (PEP 562), so that importing a package stays
cheap: ``corral``, ``corral.executors``, ``corral.store`` and ``corral.fleet`` each name what
they export and the module it lives in, and share this one ``__getattr__``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, where: Mapping[str, str], cache: MutableMapping[str, Any] | None = None
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from ``where[name]``; with ``cache``
    (the package's ``globals()``), each name is looked up once and is then a plain attribute."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        if cache is not None:
            cache[name] = value
        return value

    return __getattr__
