"""`kvplan sweep`: one table of every option side by side (models x GPUs x tp x pp x dtypes x KV dtypes x contexts)."""

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from ..extras import require_extra
from ..inputs import printable
from ..plan.deployment import SETTINGS
from ..plan.estimate import TABLE_CONTEXTS
from ..units import fmt_tokens, parse_count, parse_size
from . import options as o

GRID_PANEL = "Grid (comma-separated lists)"
OUTPUT_PANEL = "Output"
ModelsOpt = Annotated[str, typer.Option("--model", "-m", help="Models: bundled names, HF ids in the cache, paths; "
                                        "`all` = every bundled spec", rich_help_panel=GRID_PANEL)]
GpusOpt = Annotated[str, typer.Option("--gpu", help="GPUs from the catalog, or `all`", rich_help_panel=GRID_PANEL)]
TpsOpt = Annotated[str, typer.Option("--tp", help="Tensor-parallel sizes", rich_help_panel=GRID_PANEL)]
PpsOpt = Annotated[str, typer.Option("--pp", help="Pipeline-parallel sizes", rich_help_panel=GRID_PANEL)]
DtypesOpt = Annotated[str, typer.Option("--dtype", help="Weight formats; `checkpoint` = the model's own",
                                        rich_help_panel=GRID_PANEL)]
KVDtypesOpt = Annotated[str, typer.Option("--kv-dtype", help="KV cache formats (auto fp8 int8 int4 ...)",
                                          rich_help_panel=GRID_PANEL)]
ContextsOpt = Annotated[str, typer.Option("--context", help="Contexts: 4k,32k or ranges 1k:128k:x2 (geometric) / "
                                          "1k:32k:1k (step)", rich_help_panel=GRID_PANEL)]
SweepFormatOpt = Annotated[Optional[str], typer.Option("--format", "-f", help="table, csv, parquet, json, markdown "
                                                       "(default: from --output's suffix, else table)",
                                                       rich_help_panel=OUTPUT_PANEL)]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file (atomically)",
                                                   rich_help_panel=OUTPUT_PANEL)]
PlotOpt = Annotated[Optional[Path], typer.Option("--plot", help="PNG of max users vs context per configuration",
                                                 rich_help_panel=OUTPUT_PANEL)]
FitsOnlyOpt = Annotated[bool, typer.Option("--fits-only", help="Keep rows that fit (within the model's max context)",
                                           rich_help_panel=OUTPUT_PANEL)]
MinUsersOpt = Annotated[Optional[int], typer.Option("--min-users", help="Keep rows with at least this many users",
                                                    rich_help_panel=OUTPUT_PANEL)]
LimitOpt = Annotated[int, typer.Option("--limit", help="Rows the table shows (0: all)", rich_help_panel=OUTPUT_PANEL)]
MaxMemoryOpt = Annotated[str, typer.Option("--max-memory", help="Refuse grids whose table would need more memory",
                                           rich_help_panel=OUTPUT_PANEL)]


def register(app: typer.Typer) -> None:
    app.command(
        "sweep",
        help=("Every combination of models, GPUs, tp/pp, dtypes, KV dtypes and contexts, computed vectorized: "
              "weights, KV budget, KV per request, blocks and max users per configuration.\n\n"
              "Examples:\n\n"
              "  kvplan sweep                                        # llama-3.1-8b on every GPU\n\n"
              "  kvplan sweep -m llama-3.1-70b,qwen3-32b --gpu H100,A100-80GB,L40S --tp 1,2,4,8 --fits-only\n\n"
              "  kvplan sweep -m all --gpu all --tp 1,2,4,8 --kv-dtype auto,fp8 --context 1k:128k:x2 -o grid.parquet\n\n"
              "  kvplan sweep -m qwen3-8b --gpu L4,L40S --context 1k:32k:x2 --plot users.png"),
    )(sweep_command)


@o.deployment_flags(only=("gpu_memory_utilization", "block_size", "engine"))
def sweep_command(
    *, models: ModelsOpt = "llama-3.1-8b", gpus: GpusOpt = "all", tp: TpsOpt = str(SETTINGS["tp"].default),
    pp: PpsOpt = str(SETTINGS["pp"].default), dtype: DtypesOpt = "checkpoint",
    kv_dtype: KVDtypesOpt = SETTINGS["kv_dtype"].default, context: ContextsOpt = ",".join(map(fmt_tokens, TABLE_CONTEXTS)),
    flags: dict, fits_only: FitsOnlyOpt = False, min_users: MinUsersOpt = None, fmt: SweepFormatOpt = None,
    output: OutputOpt = None, plot: PlotOpt = None, limit: LimitOpt = 40, max_memory: MaxMemoryOpt = "2GiB",
) -> None:
    from ..report.sweep import format_for, render_sweep
    from ..report.common import plot_format
    from ..report.sweep_plot import plot_users_vs_context
    from ..sweep import SweepGrid, run_sweep, select

    require_extra("report", "pandas", "numpy", what="kvplan sweep")
    fmt = format_for(fmt, output)
    if fmt == "parquet":
        require_extra("report", "pyarrow", what="--format parquet")
    if plot is not None:
        require_extra("report", "matplotlib", what="--plot")
        plot_format(plot)  # a suffix matplotlib cannot write, refused before the run
    grid = SweepGrid(
        models=_models(models), gpus=_gpus(gpus), tp=_ints(tp, "--tp"), pp=_ints(pp, "--pp"),
        dtypes=tuple(None if d.lower() in ("checkpoint", "auto") else d for d in _items(dtype, "--dtype")),
        kv_dtypes=_items(kv_dtype, "--kv-dtype"), contexts=parse_contexts(context), **o.deployment_kwargs(flags))
    result = run_sweep(grid, parse_size(max_memory, "--max-memory"), progress=_progress_bar(len(grid.models)))
    frame = select(result.frame, fits_only, min_users)
    notes = [f"skipped: {s}" for s in result.skipped]
    if not result.vectorized:
        notes.append(f"engine {grid.engine}: rows computed one estimate at a time (vectorized for the generic engine)")
    render_sweep(frame, fmt, output, limit, notes)
    if fmt != "table" and output is not None:
        print(f"kvplan: wrote {len(frame):,} rows to {printable(output)}", file=sys.stderr)
    if plot is not None:
        lines = plot_users_vs_context(frame, plot, result.model_max_tokens)
        print(f"kvplan: plotted {lines} configuration(s) to {printable(plot)}", file=sys.stderr)


_MAX_CONTEXTS = 100_000


def parse_contexts(text: str) -> tuple[int, ...]:
    """`4k,32k`, `1k:128k:x2` (geometric, x factor) and `1k:32k:1k` (linear step), mixed freely; sorted, unique."""
    values: set[int] = set()
    for item in _items(text, "--context"):
        parts = item.split(":")
        if len(parts) == 1:
            values.add(parse_count(item, "--context"))
            continue
        if len(parts) != 3:
            raise InputError(f"--context {item!r}: a range is START:STOP:STEP or START:STOP:xFACTOR")
        start, stop = parse_count(parts[0], "--context"), parse_count(parts[1], "--context")
        if stop < start:
            raise InputError(f"--context {item!r}: STOP is below START")
        step = parts[2].strip().lower()
        if step.startswith("x"):
            try:
                factor = float(step[1:])
            except ValueError:
                factor = 0.0
            if not (math.isfinite(factor) and factor > 1):
                raise InputError(f"--context {item!r}: the factor must be a number above 1")
            # Counted before the loop: a factor of 1.0000001 takes ~10^8 steps to double.
            count = math.floor(math.log(stop / start) / math.log(factor)) + 1
        else:
            step_tokens = parse_count(step, "--context step")
            count = (stop - start) // step_tokens + 1
        if len(values) + count > _MAX_CONTEXTS:
            raise InputError(f"--context {item!r}: {count:,} contexts, over the limit of {_MAX_CONTEXTS:,}")
        if step.startswith("x"):
            x = float(start)
            while round(x) <= stop:
                values.add(round(x))
                x *= factor
        else:
            values.update(range(start, stop + 1, step_tokens))
    return tuple(sorted(values))


def _items(text: str, flag: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(i.strip() for i in str(text).split(",") if i.strip()))
    if not items:
        raise InputError(f"{flag}: empty list")
    return items


def _ints(text: str, flag: str) -> tuple[int, ...]:
    return tuple(dict.fromkeys(parse_count(i, flag) for i in _items(text, flag)))


def _models(text: str) -> tuple[str, ...]:
    from ..model import bundled_names

    if text.strip().lower() == "all":
        return tuple(sorted({p.stem for p in bundled_names().values()}))
    return _items(text, "--model")


def _gpus(text: str):
    from ..hardware import GPUS, find_gpu

    if text.strip().lower() == "all":
        return GPUS
    return tuple(dict.fromkeys(find_gpu(g) for g in _items(text, "--gpu")))


def _progress_bar(total_models: int):
    """A bar on stderr for long multi-model sweeps (only on a terminal)."""
    if total_models < 4 or not sys.stderr.isatty():
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("sweeping models", total=total_models)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done)
        if done == total:
            bar.stop()

    return update
