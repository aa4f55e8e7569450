"""Every `--help` reads in an 80-column terminal: nothing cut short, every default and choice
printed whole (wrapped lines joined), no line wider than the terminal."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

import pytest
import typer
from typer.testing import CliRunner

from edgetier.cli._app import app

COLUMNS = 80


# Typer carries its own copy of click, so its classes are told apart by what they have.
def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = dict(_commands(ROOT))


def _shown_default(param: Any) -> str | None:
    """The default as the help should show it, or None where it shows none."""
    default = param.default
    if param.param_type_name == "option":
        if param.show_default is False or param.hidden:
            return None
        if param.is_flag and param.secondary_opts:  # --plots/--no-plots: the name
            return (param.opts if default else param.secondary_opts)[0].lstrip("-")
        if param.is_flag:
            return None
    if default is None or default == "" or default == () or default == []:
        return None
    return str(default)


def _choices(param: Any) -> list[str]:
    """The values a Literal or Enum option takes (Typer reads choices from the annotation)."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    return []


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_every_command_is_walked() -> None:
    assert {("bench", "compare"), ("model", "convert"), ("hw", "power", "set")} <= set(COMMANDS)


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p) or "edgetier")
def test_help_fits_80_columns_and_shows_every_default_whole(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(COLUMNS)})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "…" not in text
    wide = [line for line in text.splitlines() if len(line) > COLUMNS]
    assert not wide, wide
    flat = _squeeze(text)
    command = COMMANDS[path]
    for param in command.params:
        default = _shown_default(param)
        if default is not None:
            shown = re.search(f"default:{re.escape(_squeeze(default))}[];]", flat)
            assert shown, (param.name, default, text)
        for choice in _choices(param):
            assert _squeeze(str(choice)) in flat, (param.name, choice)
    for name, sub in getattr(command, "commands", {}).items():
        first = sub.get_short_help_str(limit=10_000)
        assert _squeeze(f"{name}{first}") in flat, (name, first)
        assert "..." not in first


def test_long_default_is_printed_whole() -> None:
    result = CliRunner().invoke(app, ["bench", "compare", "--help"], env={"COLUMNS": "80"})
    assert "onnxruntime,edgetier,pytriton,ray-serve" in _squeeze(result.output)
    assert "--no-intra-op-spinning" in result.output
