"""`kvplan profile`: run the real paged-KV engine on a workload and report prediction vs measurement."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as o
from .simulate import (WORKLOAD_PANEL, GroupsOpt, NOpt, OutputOpt, PromptOpt, RequestsOpt, SeedOpt, SharedOpt,
                       TraceOpt, _workload)

PROFILE_PANEL = "Profile"
FORMATS = ("table", "json", "markdown")
# As simulate's, less what profile does not take (--clock: the device is the clock).
RateOpt = Annotated[Optional[float], typer.Option("--arrival-rate", help="Synthetic: Poisson arrivals per second; "
                                                  "default: all at once", rich_help_panel=WORKLOAD_PANEL)]
FormatOpt = o.format_option(FORMATS)

DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cuda:0 (default when CUDA is present) or cpu (checks the accounting only; give the budget with --gpu, --gpu-memory or --kv-cache-memory)", rich_help_panel=PROFILE_PANEL)]
RandomOpt = Annotated[Optional[bool], typer.Option("--random-weights/--checkpoint-weights", help="Random weights from the config (default when the model has no local safetensors) or the checkpoint's", show_default=False, rich_help_panel=PROFILE_PANEL)]
CompareOpt = Annotated[Optional[str], typer.Option("--compare", help="`contiguous`: rerun the workload reserving max_model_len tokens per request", rich_help_panel=PROFILE_PANEL)]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", help="Directory for profile.json, profile.md and PNG plots (written atomically)", rich_help_panel=PROFILE_PANEL)]


def register(app: typer.Typer) -> None:
    app.command(
        "profile",
        help=("Run the paged-KV engine (torch + transformers) on a workload; report predicted vs measured memory, "
              "blocks, users and throughput.\n\n"
              "Examples:\n\n"
              "  kvplan profile llama-3.1-8b --random-weights --requests 200 --prompt-len 1000 --output-len 200\n\n"
              "  kvplan profile qwen3-0.6b --gpu-memory-utilization 0.85 --compare contiguous --report out/\n\n"
              "  kvplan profile examples/tiny-llama/ --device cpu --kv-cache-memory 64MiB --max-num-batched-tokens 256 "
              "--requests 32 --prompt-len 20 --output-len 8 --format json"),
    )(profile_command)


@o.deployment_flags(exclude=("tp", "pp"))  # the runtime runs on one device
def profile_command(
    ctx: typer.Context,
    *, model: o.LocalModelArg = None,
    flags: dict,
    requests: RequestsOpt = 100, prompt_len: PromptOpt = "1000", output_len: OutputOpt = "500",
    shared_prefix: SharedOpt = "0", prefix_groups: GroupsOpt = 1, arrival_rate: RateOpt = None, n: NOpt = 1,
    seed: SeedOpt = 0, trace: TraceOpt = None,
    device: DeviceOpt = None, random_weights: RandomOpt = None, compare: CompareOpt = None, report: ReportOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    from ..errors import KvplanError
    from ..extras import require_extra

    require_extra("profile", "torch", "transformers", what="kvplan profile")
    if report is not None:
        require_extra("report", "matplotlib", what="--report")
    from ..profiling import raise_for_finding, run_profile
    from ..report.common import check_format
    from ..report.profile import render_profile, write_report_dir

    fmt = check_format(fmt, FORMATS)
    workload, _ = _workload(ctx, trace, requests, prompt_len, output_len, shared_prefix, prefix_groups,
                            arrival_rate, n, seed)
    loaded = o.load_model_from_flags(model)
    dep = o.deployment_from_flags(flags)
    total = sum(item.output_len * item.num_samples for item in workload)
    bar = _Bar(total, 2 if compare else 1) if sys.stderr.isatty() else None

    def write_report(result) -> None:
        try:
            paths = write_report_dir(result, report)
        except OSError as exc:
            raise KvplanError(f"--report {report}: cannot write ({exc.strerror})") from None
        print(f"kvplan: wrote {', '.join(p.name for p in paths)} to {report}", file=sys.stderr)

    try:  # with --report, the paged run's report is written before a contiguous rerun too
        result = run_profile(loaded, dep, workload, device=device, random_weights=random_weights, compare=compare,
                             seed=seed, warn=_warn, progress=bar.update if bar else None,
                             checkpoint=write_report if report is not None else None)
    finally:
        if bar:
            bar.stop()
    if report is not None:
        write_report(result)
    render_profile(result, fmt)
    raise_for_finding(result)
    if result.interrupted:
        raise typer.Exit(130)


def _warn(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold yellow]{text}[/bold yellow]")


class _Bar:
    """Sampled tokens against the workload's output tokens, one bar per run (paged, contiguous)."""

    def __init__(self, total: int, runs: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("tokens"), TimeElapsedColumn(), console=Console(stderr=True),
                                 transient=True)
        self.tasks = {"paged": self.progress.add_task("engine run (paged)", total=total)}
        if runs > 1:
            self.tasks["contiguous"] = self.progress.add_task("engine run (contiguous)", total=total)
        self.progress.start()

    def update(self, phase: str, tokens: int) -> None:
        self.progress.advance(self.tasks[phase], tokens)

    def stop(self) -> None:
        self.progress.stop()
