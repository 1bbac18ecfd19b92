"""`kvplan simulate`: run a workload through the paged allocator and scheduler on the estimate's pool."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..inputs import printable
from ..report.common import FORMATS, check_format, plot_format
from . import options as o

WORKLOAD_PANEL = "Workload"
SIM_PANEL = "Simulation"

RequestsOpt = Annotated[int, typer.Option("--requests", help="Synthetic: number of requests", rich_help_panel=WORKLOAD_PANEL)]
PromptOpt = Annotated[str, typer.Option("--prompt-len", help="Synthetic: each request's own prompt tokens, after any shared prefix: N, uniform:LO:HI, lognormal:MEAN:SIGMA, exponential:MEAN", rich_help_panel=WORKLOAD_PANEL)]
OutputOpt = Annotated[str, typer.Option("--output-len", help="Synthetic: tokens to generate (same forms as --prompt-len)", rich_help_panel=WORKLOAD_PANEL)]
SharedOpt = Annotated[str, typer.Option("--shared-prefix", help="Synthetic: tokens every request of a prefix group starts with (a system prompt)", rich_help_panel=WORKLOAD_PANEL)]
GroupsOpt = Annotated[int, typer.Option("--prefix-groups", help="Synthetic: distinct shared prefixes (request i uses group i mod G)", rich_help_panel=WORKLOAD_PANEL)]
RateOpt = Annotated[Optional[float], typer.Option("--arrival-rate", help="Synthetic: Poisson arrivals per second (per step with --clock steps); default: all at once", rich_help_panel=WORKLOAD_PANEL)]
NOpt = Annotated[int, typer.Option("--n", help="Samples per request (forked after the prompt, copy-on-write)", rich_help_panel=WORKLOAD_PANEL)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Synthetic: random seed (same seed, same workload)", rich_help_panel=WORKLOAD_PANEL)]
TraceOpt = Annotated[Optional[Path], typer.Option("--trace", help="Trace file, format detected: kvplan or Mooncake JSONL, Azure or BurstGPT CSV (docs/simulate.md); replaces the synthetic flags", rich_help_panel=WORKLOAD_PANEL)]
TraceSpeedOpt = Annotated[float, typer.Option("--trace-speed", help="Trace: divide arrival times by X (2: twice the request rate)", rich_help_panel=WORKLOAD_PANEL)]
TraceLimitOpt = Annotated[Optional[int], typer.Option("--trace-limit", help="Trace: replay only the first N requests", rich_help_panel=WORKLOAD_PANEL)]
TraceBlockOpt = Annotated[Optional[int], typer.Option("--trace-block-size", help="Mooncake trace: prompt tokens per hash id (default 512)", rich_help_panel=WORKLOAD_PANEL)]
ModeOpt = Annotated[str, typer.Option("--mode", help="event (skip steps where nothing changes) or step (every step, slow reference)", rich_help_panel=SIM_PANEL)]
ClockOpt = Annotated[str, typer.Option("--clock", help="auto, cost (roofline step time from the GPU) or steps", rich_help_panel=SIM_PANEL)]
PrefixOpt = Annotated[bool, typer.Option("--prefix-caching/--no-prefix-caching", help="Share cached full blocks between requests", rich_help_panel=SIM_PANEL)]
ChunkedOpt = Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill", help="Split prompts that exceed the step's token budget", rich_help_panel=SIM_PANEL)]
ContiguousOpt = Annotated[bool, typer.Option("--contiguous/--no-contiguous", help="Also run the workload under max_model_len reservations", rich_help_panel=SIM_PANEL)]
SloTtftOpt = Annotated[Optional[float], typer.Option("--slo-ttft", help="Report the share of requests whose time to first token is at most this many seconds (modelled)", rich_help_panel=SIM_PANEL)]
SloTpotOpt = Annotated[Optional[float], typer.Option("--slo-tpot", help="Report the share of requests whose time per output token after the first is at most this many seconds (modelled)", rich_help_panel=SIM_PANEL)]
PlotOpt = Annotated[Optional[Path], typer.Option("--plot", help="PNG of blocks in use and memory utilization over time", rich_help_panel=SIM_PANEL)]

FormatOpt = o.format_option(FORMATS)

_SYNTHETIC = ("requests", "prompt_len", "output_len", "shared_prefix", "prefix_groups", "arrival_rate", "seed")
_TRACE = ("trace_speed", "trace_limit", "trace_block_size")


def register(app: typer.Typer) -> None:
    app.command(
        "simulate",
        help=("Run a workload through the paged KV allocator and scheduler, on the pool the estimate predicts.\n\n"
              "Examples:\n\n"
              "  kvplan simulate llama-3.1-8b --gpu H100 --requests 1000 --prompt-len lognormal:1000:1 --output-len 500\n\n"
              "  kvplan simulate llama-3.1-8b --gpu H100 --max-model-len 8192 --shared-prefix 1000 --prompt-len 0 "
              "--output-len uniform:50:4000 --requests 1000\n\n"
              "  kvplan simulate qwen3-8b --gpu L40S --trace examples/trace.jsonl --format json\n\n"
              "  kvplan simulate llama-3.1-8b --gpu H100 --trace examples/mooncake_trace.jsonl --trace-speed 2 "
              "--slo-ttft 2 --slo-tpot 0.05\n\n"
              "  kvplan simulate llama-3.1-8b --gpu H100 --requests 5000 --arrival-rate 20 --plot blocks.png"),
    )(simulate_command)


@o.deployment_flags(exclude=("context", "batch"))  # a workload has its own lengths and count
def simulate_command(
    ctx: typer.Context,
    *, model: o.ModelArg = None,
    layers: o.LayersOpt = None, kv_heads: o.KVHeadsOpt = None, head_dim: o.HeadDimOpt = None,
    heads: o.HeadsOpt = None, hidden_size: o.HiddenOpt = None, allow_unknown_arch: o.AllowUnknownOpt = False,
    online: o.OnlineOpt = None, revision: o.RevisionOpt = None,
    flags: dict,
    requests: RequestsOpt = 100, prompt_len: PromptOpt = "1000", output_len: OutputOpt = "500",
    shared_prefix: SharedOpt = "0", prefix_groups: GroupsOpt = 1, arrival_rate: RateOpt = None, n: NOpt = 1,
    seed: SeedOpt = 0, trace: TraceOpt = None, trace_speed: TraceSpeedOpt = 1.0, trace_limit: TraceLimitOpt = None,
    trace_block_size: TraceBlockOpt = None,
    mode: ModeOpt = "event", clock: ClockOpt = "auto", prefix_caching: PrefixOpt = True,
    chunked_prefill: ChunkedOpt = True, contiguous: ContiguousOpt = True, slo_ttft: SloTtftOpt = None,
    slo_tpot: SloTpotOpt = None, plot: PlotOpt = None, fmt: FormatOpt = "table",
) -> None:
    from ..extras import require_extra
    from ..report.simulate import render_simulation
    from ..report.simulate_plot import plot_simulation
    from ..simulation.run import simulate

    fmt = check_format(fmt, FORMATS)
    if plot is not None:
        require_extra("report", "matplotlib", what="--plot")
        plot_format(plot)  # a suffix matplotlib cannot write, refused before the run
    workload, total = _workload(ctx, trace, requests, prompt_len, output_len, shared_prefix, prefix_groups,
                                arrival_rate, n, seed, trace_speed, trace_limit, trace_block_size)
    loaded = o.load_model_from_flags(model, layers, kv_heads, head_dim, heads, hidden_size, allow_unknown_arch,
                                     online=online, revision=revision)
    assumed_gpu = not {"gpu", "gpu_memory", "kv_cache_memory"} & flags.keys()
    dep = o.deployment_from_flags(flags, default_gpu=o.DEFAULT_GPU if assumed_gpu else None)
    bar = _progress_bar(total, 2 if contiguous else 1)
    try:
        report = simulate(loaded, dep, workload, mode=mode, clock=clock, prefix_caching=prefix_caching,
                          chunked_prefill=chunked_prefill, compare_contiguous=contiguous, slo_ttft=slo_ttft,
                          slo_tpot=slo_tpot, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.stop()
    if assumed_gpu:
        report.notes.insert(0, f"no GPU given: simulating one {o.DEFAULT_GPU} (pass --gpu or --kv-cache-memory)")
    if plot is not None:
        plot_simulation(report, plot)
    render_simulation(report, fmt)
    if plot is not None:
        print(f"kvplan: plotted blocks in use and utilization to {printable(plot)}", file=sys.stderr)


def _workload(ctx, trace, requests, prompt_len, output_len, shared_prefix, prefix_groups, arrival_rate, n, seed,
              trace_speed=1.0, trace_limit=None, trace_block_size=None):
    """The workload and its request count; a trace is read through once first, so errors come before any work."""
    from ..errors import InputError
    from ..simulation.trace import TraceWorkload
    from ..simulation.workload import Distribution, SyntheticWorkload
    from ..units import parse_count

    # Typer may vendor its own click: compare the source by name, not by enum identity.
    given = [k for k in (_SYNTHETIC if trace is not None else _TRACE)
             if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"]
    if trace is not None:
        if given:
            raise InputError(f"--trace replaces the synthetic workload: drop --{given[0].replace('_', '-')}")
        if n != 1:
            raise InputError("--n goes with the synthetic workload; give \"n\" per line in a trace")
        workload = TraceWorkload(trace, trace_speed, trace_limit, trace_block_size)
        return workload, workload.validate()
    if given:
        raise InputError(f"--{given[0].replace('_', '-')} goes with --trace")
    shared = parse_count(shared_prefix, "--shared-prefix", minimum=0)
    workload = SyntheticWorkload(
        requests, Distribution.parse(prompt_len, "--prompt-len", minimum=0 if shared else 1),
        Distribution.parse(output_len, "--output-len"), shared, prefix_groups, arrival_rate, n, seed)
    return workload, requests


class _Bar:
    def __init__(self, total: int, runs: int):
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(console=Console(stderr=True), transient=True)
        self.tasks = {"paged": self.progress.add_task("simulating (paged)", total=total)}
        if runs > 1:
            self.tasks["contiguous"] = self.progress.add_task("simulating (contiguous)", total=total)
        self.progress.start()

    def update(self, phase: str, done: int) -> None:
        self.progress.update(self.tasks[phase], completed=done)

    def stop(self) -> None:
        self.progress.stop()


def _progress_bar(total: int, runs: int) -> _Bar | None:
    """Only on a terminal, and only for runs long enough to wait for."""
    if total < 2000 or not sys.stderr.isatty():
        return None
    return _Bar(total, runs)
