"""`kvplan models`: the bundled specs with their attention layout, KV bytes/token and params."""

import typer

from ..report.common import FORMATS
from . import options as o

FormatOpt = o.format_option(FORMATS)


def register(app: typer.Typer) -> None:
    app.command("models", help="List bundled model specs.\n\nExamples:\n\n  kvplan models\n\n  kvplan models --format json")(models_command)


def models_command(fmt: FormatOpt = "table") -> None:
    from ..report.models import render_models

    render_models(fmt)
