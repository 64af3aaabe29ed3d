"""PEP 562 module attributes for plugin packages that keep their vendor SDK out of reach.

A plugin's package ``__init__`` is its entry point, imported by every process that loads
plugins; names that live in modules importing a vendor SDK are resolved on first use::

    __getattr__, __dir__ = lazy_exports(__name__, {"PostHogProvider": "._provider"})

(With ``if TYPE_CHECKING: from ._provider import PostHogProvider`` beside it, type
checkers see the real names.)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each of ``names`` (name → module,
    relative to ``package`` when it starts with a dot) is imported on first access and
    kept in the package's namespace, so later accesses cost nothing."""
    lazy = dict(names)

    def __getattr__(name: str) -> object:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value: object = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *lazy})

    return __getattr__, __dir__
