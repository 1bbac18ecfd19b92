"""`kvplan check`: evaluate deployment files against their requirements; exit 0 pass, 1 fail, 2 bad input."""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError

FilesArg = Annotated[list[Path], typer.Argument(
    help="Deployment files (docs/deployment.schema.json), Kubernetes manifests or docker-compose files",
    show_default=False)]
CheckFormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json, junit, markdown or github")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the report to this file "
                                                   "(json, junit, markdown, github) instead of stdout")]


def register(app: typer.Typer) -> None:
    app.command(
        "check",
        help=("Check deployments against their requirements: a table of rules with pass/fail and the numbers "
              "behind them. Exit 0 when all pass, 1 when a rule fails, 2 on invalid input.\n\n"
              "Examples:\n\n"
              "  kvplan check examples/passing.yaml\n\n"
              "  kvplan check examples/passing.yaml examples/with-manifest.yaml --format junit -o kvplan-junit.xml\n\n"
              "  kvplan check examples/k8s-deployment.yaml --format github   # annotations + step summary"),
    )(check_command)


def check_command(files: FilesArg, fmt: CheckFormatOpt = "table", output: OutputOpt = None) -> None:
    from ..check import check_files
    from ..report.check import CHECK_FORMATS, markdown, render_check
    from ..report.common import check_format

    fmt = check_format(fmt, CHECK_FORMATS)
    if output is not None and fmt == "table":
        raise InputError("--output needs a document format: --format json, junit, markdown or github")
    report = check_files(files)
    text = render_check(report, fmt)
    if text is not None:
        if output is not None:
            from ..atomic import write_text_atomic

            write_text_atomic(output, text)
        else:
            typer.echo(text, nl=False)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and fmt in ("markdown", "github"):
        try:
            with open(summary, "a", encoding="utf-8") as f:  # GitHub collects what each step appends
                f.write(markdown(report) + "\n")
        except OSError as exc:  # the verdict still stands; only the summary is lost
            print(f"kvplan: warning: cannot append to $GITHUB_STEP_SUMMARY ({exc.strerror})", file=sys.stderr)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
