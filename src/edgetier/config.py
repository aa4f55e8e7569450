"""Reading and validating EdgeTier's files: one path and one error format for all of them.

Model configs, pipeline files, the hardware catalog and the ``serve`` options are pydantic
models that forbid unknown fields. They are read with :func:`load_file` (or validated
with :func:`validate` when already parsed), which reports every error at once as one
:class:`~edgetier.errors.ConfigError`, a line per error, each naming the file, the field
path, the value and the limit::

    config = load_file(Path("models/m/config.yaml"), ModelConfig, what="model config")
    # ConfigError: models/m/config.yaml: 2 errors
    #   models/m/config.yaml: max_batch_size: must be >= 0, got -1
    #   models/m/config.yaml: dynamic_batching.max_queue_size: must be an integer, got 'x'

A validator that checks several fields together raises :class:`FieldError` with the
path below the model it belongs to, so the line names the field, not the model.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgetier.errors import ConfigError

__all__ = ["ConfigModel", "FieldError", "format_errors", "load_file", "read_yaml", "validate"]

M = TypeVar("M", bound=BaseModel)

_DEPTH: ContextVar[int] = ContextVar("edgetier_config_depth", default=0)
"""How deep inside a validation we are: only the outermost one turns errors into text."""


class ConfigModel(BaseModel):
    """Base of EdgeTier's config models: unknown fields are refused, and a config built
    in Python (``SceneConfig(width=10)``) raises ConfigError in the same one-line-per-error
    form as a file, naming every field, value and limit."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, **data: Any) -> None:
        token = _DEPTH.set(_DEPTH.get() + 1)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if token.old_value not in (token.MISSING, 0):
                raise  # nested: the outer validation reports it with the full path
            name = type(self).__name__
            raise ConfigError(format_errors(exc, name, type(self), what=name)) from None
        finally:
            _DEPTH.reset(token)


class FieldError(ValueError):
    """A rule over several fields broken; ``field`` is the path below the checking model.

    ``field`` uses the file's spelling: ``dynamic_batching.preferred_batch_size[1]``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def read_yaml(path: Path, *, what: str = "file") -> Any:
    """Parse a YAML file; a missing file or a syntax error is a ConfigError with the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_yaml_reason(exc)}") from None


def validate(
    model: type[M],
    data: Any,
    *,
    source: str,
    what: str = "file",
    given_elsewhere: Mapping[str, tuple[str, str]] | None = None,
) -> M:
    """Validate parsed data against ``model``; every error at once in one ConfigError.

    ``given_elsewhere``: see :func:`format_errors` (a file and command-line options merged).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the {what} must be a mapping of fields, got {_kind(data)}")
    token = _DEPTH.set(_DEPTH.get() + 1)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message = format_errors(exc, source, model, what=what, given_elsewhere=given_elsewhere)
        raise ConfigError(message) from None
    finally:
        _DEPTH.reset(token)


def load_file(path: Path, model: type[M], *, what: str = "file") -> M:
    """Read a YAML file and validate it against ``model`` (see :func:`validate`)."""
    return validate(model, read_yaml(path, what=what), source=str(path), what=what)


def format_errors(
    error: ValidationError,
    source: str,
    model: type[BaseModel],
    *,
    what: str = "file",
    given_elsewhere: Mapping[str, tuple[str, str]] | None = None,
) -> str:
    """One line per error: ``<source>: <field path>: <what is wrong>, got <value>``.

    ``given_elsewhere`` maps a top-level field to (source, name) where its value came from
    somewhere else than ``source`` (``{"http_port": ("command line", "--http-port")}``).
    """
    details = error.errors(include_url=False)
    elsewhere = given_elsewhere or {}
    lines = []
    for detail in details:
        loc = list(detail["loc"])
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc.extend(_split_path(cause.field))
        path, parent = _walk(model, loc)
        where, shown = source, path or "(top level)"
        if loc and str(loc[0]) in elsewhere:
            where, name = elsewhere[str(loc[0])]
            shown = name + path[len(str(loc[0])) :]
        lines.append(f"{where}: {shown}: {_describe(detail, parent, loc)}")
    if len(lines) == 1:
        return lines[0]
    head = f"{source}: {len(lines)} errors in the {what}"
    return "\n".join([head, *("  " + line for line in lines)])


# -- field paths ---------------------------------------------------------------------


def _walk(model: type[BaseModel], loc: list[Any]) -> tuple[str, Any]:
    """The display path of ``loc`` and the model holding its last part.

    pydantic puts the tag of a discriminated union (and a validator's name) into the
    location; the file has no such level, so those parts are dropped.
    """
    path = ""
    current: Any = model
    parent: Any = model
    pending_tags: dict[str, Any] = {}
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if isinstance(part, str) and part in pending_tags:
            current = pending_tags[part]
            pending_tags = {}
            continue
        pending_tags = {}
        if isinstance(part, int):
            path += f"[{part}]"
            current = _item_of(current)
        else:
            path += f".{part}" if path else str(part)
            parent = current
            current = _field_type(current, part)
        choices, tagged = _tagged_models(current)
        if tagged:
            pending_tags = choices
        elif choices:
            current = next(iter(choices.values()))
    return path, parent


def _field_type(current: Any, name: str) -> Any:
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        field = current.model_fields.get(name)
        return field.annotation if field is not None else None
    if typing.get_origin(current) is dict:
        args = typing.get_args(current)
        return args[1] if len(args) == 2 else None
    return None


def _item_of(current: Any) -> Any:
    current = _unwrap(current)
    origin = typing.get_origin(current)
    args = [a for a in typing.get_args(current) if a is not Ellipsis]
    if origin in (list, tuple, set, frozenset) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return current


def _tagged_models(annotation: Any) -> tuple[dict[str, Any], bool]:
    """Models behind an annotation keyed by their ``kind`` tag, and whether pydantic puts
    the tag into error locations (a registry's or a discriminated union)."""
    found: dict[str, Any] = {}
    registry = _registry_of(annotation)
    if registry is not None:
        return registry, True
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            kind = item.model_fields.get("kind")
            tags = typing.get_args(kind.annotation) if kind is not None else ()
            for tag in tags or (item.__name__,):
                found[str(tag)] = item
        elif typing.get_origin(item) in (typing.Union, types.UnionType, typing.Annotated):
            stack.extend(a for a in typing.get_args(item) if isinstance(a, type) or _is_type(a))
    return found, len({id(model) for model in found.values()}) > 1


def _registry_of(annotation: Any) -> dict[str, Any] | None:
    """The {tag: model} of an annotation whose schema is a registry's tagged union."""
    unwrapped = _unwrap(annotation)
    for meta in getattr(unwrapped, "__metadata__", ()):
        choices = getattr(meta, "choices", None)
        if callable(choices):
            return dict(choices())
    return None


def _is_type(item: Any) -> bool:
    return typing.get_origin(item) is not None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> X (Annotated is kept: registries live in its metadata)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _split_path(field: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in field.split("."):
        name, *indexes = piece.split("[")
        if name:
            parts.append(name)
        parts.extend(int(index.rstrip("]")) for index in indexes)
    return parts


# -- messages ------------------------------------------------------------------------

_BOUNDS = {
    "greater_than_equal": ">=",
    "greater_than": ">",
    "less_than_equal": "<=",
    "less_than": "<",
}
_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
}


def _describe(detail: Any, parent: Any, loc: list[Any]) -> str:
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    value = detail.get("input")
    got = f", got {_shown(value)}"
    if kind == "extra_forbidden":
        allowed = _fields(parent)
        return "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {next(iter(ctx.values()))}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}{got}"
    if kind in _TYPES:
        return f"must be {_TYPES[kind]}{got}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s){got}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s){got}"
    if kind == "string_too_short":
        return f"must have at least {ctx.get('min_length')} character(s){got}"
    if kind == "string_too_long":
        return f"must have at most {ctx.get('max_length')} character(s){got}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}{got}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = ctx.get("expected_tags", "")
        if kind == "union_tag_not_found":
            return f"needs a 'kind' field; one of {tags}"
        return f"kind {ctx.get('tag')!r} is not one of {tags}"
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        message = str(cause) if cause is not None else detail["msg"]
        message = message.removeprefix("Value error, ")
        if "got" in message or isinstance(value, dict):
            return message
        return f"{message}{got}"
    return f"{detail['msg']}{got}"


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _fields(model: Any) -> list[str]:
    model = _unwrap(model)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [field.alias or name for name, field in model.model_fields.items()]
    return []


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)
