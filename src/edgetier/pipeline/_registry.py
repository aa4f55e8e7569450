"""Registries of the pipeline's plug-ins: sources, stages and sinks.

Each kind (``file``, ``detector``, ``mqtt``, ...) maps to its config model and its
implementation. The implementation may be given as a dotted path, imported on first
use, so that validating a pipeline file needs no heavy library; when that import fails
for want of an optional package, the error names the extra to install. The pipeline
file's unions of source, stage and sink configs are built from the registries, so a new
kind is one config class, one implementation and one registration::

    class CsvSinkConfig(SinkConfig):
        kind: Literal["csv"]
        path: str

    register_sink(CsvSinkConfig, CsvSink)        # or "mypackage.sinks:CsvSink"
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from edgetier.errors import ConfigError, MissingExtraError
from edgetier.extras import missing_extra

__all__ = ["Plugin", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Plugin(Generic[T]):
    """One registered kind: its config model and its implementation (or where it lives)."""

    kind: str
    config: type[BaseModel]
    target: type[T] | str
    extra: str | None = None


class Registry(Generic[T]):
    """Kinds of one plug-in family (``what``: "source", "stage", "sink")."""

    def __init__(self, what: str, base: type[T] | None = None) -> None:
        self.what = what
        self.base = base
        self._plugins: dict[str, Plugin[T]] = {}
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, kinds={self.kinds()})"

    def register(
        self, config: type[BaseModel], target: type[T] | str, *, extra: str | None = None
    ) -> None:
        """Add (or replace) the kind that ``config``'s ``kind: Literal[...]`` names."""
        for kind in _kinds_of(config, self.what):
            self._plugins[kind] = Plugin(kind, config, target, extra)
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each registration (the pipeline file rebuilds its schema)."""
        self._listeners.append(listener)

    def kinds(self) -> list[str]:
        return sorted(self._plugins)

    def choices(self) -> dict[str, type[BaseModel]]:
        """{kind: config model}: what the pipeline file accepts here."""
        return {kind: plugin.config for kind, plugin in sorted(self._plugins.items())}

    def plugin(self, kind: str) -> Plugin[T]:
        try:
            return self._plugins[kind]
        except KeyError:
            raise ConfigError(
                f"unknown {self.what} kind {kind!r}; known: {', '.join(self.kinds())}"
            ) from None

    def load(self, kind: str) -> type[T]:
        """The implementation of ``kind``, imported now if it was registered by path."""
        plugin = self.plugin(kind)
        if not isinstance(plugin.target, str):
            return plugin.target
        module_name, _, attr = plugin.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            known = missing_extra(exc)
            if known is not None:
                raise known from exc
            if plugin.extra is None or exc.name == module_name:
                raise
            raise MissingExtraError(exc.name or module_name, plugin.extra) from exc
        loaded: type[T] = getattr(module, attr)
        self._plugins[kind] = Plugin(kind, plugin.config, loaded, plugin.extra)
        return loaded

    def union(self) -> RegistryUnion:
        """Annotation metadata: the tagged union of the registered configs, by ``kind``."""
        return RegistryUnion(self)


class RegistryUnion:
    """pydantic metadata whose schema is the registry's configs as a tagged union.

    The schema is made when the enclosing model builds it, so ``model_rebuild(force=True)``
    after a registration picks the new kind up.
    """

    def __init__(self, registry: Registry[Any]) -> None:
        self.registry = registry

    def choices(self) -> dict[str, type[BaseModel]]:
        return self.registry.choices()

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        choices = {kind: handler.generate_schema(model) for kind, model in self.choices().items()}
        if not choices:
            return core_schema.no_info_plain_validator_function(self._none_registered)
        return core_schema.tagged_union_schema(choices, discriminator="kind")

    def _none_registered(self, value: Any) -> Any:
        raise ValueError(f"no {self.registry.what} kind is registered")


def _kinds_of(config: type[BaseModel], what: str) -> tuple[str, ...]:
    field = config.model_fields.get("kind")
    kinds = typing.get_args(field.annotation) if field is not None else ()
    if not kinds or not all(isinstance(k, str) for k in kinds):
        raise ConfigError(
            f"{config.__name__}: a {what} config needs a field kind: Literal['name', ...]"
        )
    return tuple(str(k) for k in kinds)
