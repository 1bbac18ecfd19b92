"""`kvplan models`: the bundled specs with their attention layout, KV bytes/token and params."""

import typer

from . import options as o


def register(app: typer.Typer) -> None:
    app.command("models", help="List bundled model specs.\n\nExamples:\n\n  kvplan models\n\n  kvplan models --format json")(models_command)


def models_command(fmt: o.FormatOpt = "table") -> None:
    from ..report.models import render_models

    render_models(fmt)
