"""Help that reads in an 80-column terminal.

The commands print click's plain help (``rich_markup_mode=None`` on the root app): it wraps
long defaults and flag names, where rich's tables cut them short ("onnxruntime,edgetie…").
:class:`HelpGroup` does the same for the list of commands, where click would cut each
command's first sentence at the terminal's width. Every group is made with it::

    app.add_typer(sub_app, name="sub", cls=HelpGroup)
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

__all__ = ["HelpGroup"]


class HelpGroup(TyperGroup):
    """A command group that lists each command with its whole first sentence, wrapped."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # ctx and formatter are the click types Typer carries (typer._click)
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            command: Any = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
