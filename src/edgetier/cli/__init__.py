"""The `edgetier` command line.

$ edgetier --version
$ edgetier serve --model-repository models/
$ edgetier model convert --fp16 models/resnet50
"""

from __future__ import annotations

from edgetier.cli._app import app, main

__all__ = ["app", "main"]
