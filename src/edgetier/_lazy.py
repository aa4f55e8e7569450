"""Names of a package imported on first use, so that importing the package stays cheap.

A package lists where each lazy name lives and installs the hooks (PEP 562)::

    __getattr__, __dir__ = lazy_names(__name__, {"Pipeline": "_runner"}, __all__)

A module that needs an absent extra raises MissingExtraError with the install command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgetier.extras import missing_extra

__all__ = ["lazy_names"]


def lazy_names(
    package: str, where: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``where`` maps a name to its module."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            loaded = importlib.import_module(f"{package}.{module}")
        except ModuleNotFoundError as exc:
            error = missing_extra(exc)  # its cause is exc
            if error is None:
                raise
            raise error from exc
        value = getattr(loaded, name)
        setattr(sys.modules[package], name, value)  # later lookups skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted(public)

    return __getattr__, __dir__
