"""`kvplan gpus`: the GPU catalog --gpu names: memory as nvidia-smi and CUDA report it, bandwidth, FLOP/s."""

import typer

from ..report.common import FORMATS
from . import options as o

FormatOpt = o.format_option(FORMATS)


def register(app: typer.Typer) -> None:
    app.command("gpus", help="List the GPUs --gpu accepts, with their memory, bandwidth, FLOP/s and aliases.\n\n"
                             "Examples:\n\n  kvplan gpus\n\n  kvplan gpus --format json")(gpus_command)


def gpus_command(fmt: FormatOpt = "table") -> None:
    from ..report.gpus import render_gpus

    render_gpus(fmt)
