"""`profile --report DIR`: memory.png (predicted vs measured memory terms) and timeline.png (blocks,
running sequences and, on CUDA, memory per step)."""

from pathlib import Path

from ..units import fmt_gib

# Memory terms drawn in memory.png (only those the device measured).
MEMORY_TERMS = (("weights_bytes", "weights"), ("activation_peak_bytes", "activations"),
                ("non_torch_bytes", "non-torch"), ("kv_pool_bytes", "KV pool"))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    from ..atomic import atomic_output

    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def memory_chart_terms(d: dict) -> tuple[list, list]:
    """(drawn, left out): the memory terms the device measured, and those it did not."""
    shown = [(k, label) for k, label in MEMORY_TERMS if d["measured"].get(k) is not None]
    return shown, [(k, label) for k, label in MEMORY_TERMS if d["measured"].get(k) is None]


def plot_memory(d: dict, path: Path) -> Path:
    """Predicted (static) vs measured bars for the memory terms this device measured; the figure
    says which terms it leaves out and what they were predicted to be."""
    shown, left_out = memory_chart_terms(d)
    largest = max([d["predicted_static"].get(k) or 0 for k, _ in shown] +
                  [d["measured"].get(k) or 0 for k, _ in shown] + [0])
    unit, scale = ("GiB", 2 ** 30) if largest >= 2 ** 30 else ("MiB", 2 ** 20)
    fig = _figure(8, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(shown))
    pred = [(d["predicted_static"].get(k) or 0) / scale for k, _ in shown]
    meas = [d["measured"][k] / scale for k, _ in shown]
    bars = ax.bar([x - 0.2 for x in xs], pred, 0.4, label="predicted (estimate)")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    bars = ax.bar([x + 0.2 for x in xs], meas, 0.4, label="measured")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks(list(xs), [label for _, label in shown])
    ax.set_ylabel(unit)
    ax.set_title(f"kvplan profile: {d['model']} on {d['device_name']}")
    ax.legend(loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    if left_out:
        why = "; ".join(sorted({d["measured_basis"].get(k, {}).get("how", "not measured") for k, _ in left_out}))
        text = ("Not measured here, so not drawn: " +
                ", ".join(f"{label} (predicted {fmt_gib(d['predicted_static'].get(k))})"
                          if d["predicted_static"].get(k) is not None else label for k, label in left_out) +
                f".\n{why}.")
        fig.text(0.01, 0.01, text, fontsize=8, va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        fig.tight_layout()
    return _save(fig, path)


def plot_timeline(d: dict, path: Path) -> Path:
    """Blocks in use and running sequences per step; torch allocated / reserved when on CUDA."""
    samples = d["samples"]
    steps = [s["step"] for s in samples]
    cuda = any(s["allocated_bytes"] is not None for s in samples)
    fig = _figure(10, 7 if cuda else 5)
    top = fig.add_subplot(2 if cuda else 1, 1, 1)
    top.plot(steps, [s["blocks_in_use"] for s in samples], label="blocks in use")
    top.axhline(d["measured"].get("num_blocks") or 0, color="grey", linewidth=0.8, label="pool")
    top.set_ylabel("blocks")
    top.set_ylim(bottom=0)
    right = top.twinx()
    right.plot(steps, [s["running"] for s in samples], color="tab:orange", linewidth=0.8, label="running")
    right.set_ylabel("running sequences")
    top.legend(loc="upper left", fontsize=8)
    right.legend(loc="upper right", fontsize=8)
    top.set_title(f"kvplan profile: {d['model']}")
    top.grid(True, alpha=0.3)
    if cuda:
        bottom = fig.add_subplot(2, 1, 2)
        gib = 2 ** 30
        bottom.plot(steps, [(s["allocated_bytes"] or 0) / gib for s in samples], label="torch allocated")
        bottom.plot(steps, [(s["reserved_bytes"] or 0) / gib for s in samples], label="torch reserved")
        if any(s["nvml_used_bytes"] is not None for s in samples):
            bottom.plot(steps, [(s["nvml_used_bytes"] or 0) / gib for s in samples], label="NVML used")
        bottom.set_ylabel("GiB")
        bottom.set_xlabel("step")
        bottom.legend(fontsize=8)
        bottom.grid(True, alpha=0.3)
    else:
        top.set_xlabel("step")
    fig.tight_layout()
    return _save(fig, path)
