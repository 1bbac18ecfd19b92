"""The GPU catalog listing (`kvplan gpus`)."""

import csv
import sys

from .. import hardware
from ..units import GiB, MiB
from .common import check_format, console, md_table, print_json

NOTES = ("nvidia-smi total: the memory nvidia-smi shows (MiB = 2^20 B, GiB = 2^30 B); kvplan's budgets start from it",
         "CUDA total: what CUDA reports (torch.cuda.mem_get_info); '-' where the catalog does not hold it yet",
         "bandwidth in TB/s = 10^12 B/s; bf16 dense in TFLOP/s = 10^12 FLOP/s, without sparsity")


def gpu_rows() -> list[dict]:
    """One row per catalog GPU; `cuda_total_bytes` is None where the catalog lacks it."""
    return [{"name": g.name, "nvidia_smi_total_bytes": g.memory_bytes,
             "cuda_total_bytes": getattr(g, "cuda_total_bytes", None),
             "bandwidth_bytes_per_s": g.bandwidth_bytes_per_s, "bf16_dense_flops": g.bf16_dense_flops,
             "aliases": list(g.aliases), "note": g.note} for g in hardware.GPUS]


def render_gpus(fmt: str = "table") -> None:
    fmt = check_format(fmt)
    rows = gpu_rows()
    if fmt == "json":
        print_json(rows)
        return
    if fmt == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({**r, "aliases": " ".join(r["aliases"])} for r in rows)
        return
    headers = ["GPU", "nvidia-smi total", "CUDA total", "bandwidth", "bf16 dense", "aliases"]
    table = [[r["name"], _smi(r["nvidia_smi_total_bytes"]), _gib(r["cuda_total_bytes"]),
              _rate(r["bandwidth_bytes_per_s"], "TB/s"), _rate(r["bf16_dense_flops"], "TFLOP/s"),
              ", ".join(r["aliases"])] for r in rows]
    notes = list(NOTES) + [f"{r['name']}: {r['note']}" for r in rows if r["note"]]
    if fmt == "markdown":
        sys.stdout.write(md_table(headers, table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
        return
    from rich.measure import Measurement

    out = console()
    t = _table(headers, table)
    if Measurement.get(out, out.options.update_width(10_000), t).maximum <= out.width:
        out.print(t)
    else:  # too narrow for the table: one block per GPU, so no name or number is cut
        for row in table:
            out.print(row[0])
            for header, cell in zip(headers[1:], row[1:]):
                out.print(f"  {header:<18}{cell}")
    for note in notes:
        out.print(note)


def _table(headers: list[str], table: list[list[str]]):
    from rich import box
    from rich.table import Table

    t = Table(title=f"{len(table)} GPUs in the catalog", box=box.SIMPLE_HEAD, pad_edge=False)
    for h in headers:
        t.add_column(h, no_wrap=True, justify="left" if h in ("GPU", "aliases") else "right")
    for row in table:
        t.add_row(*row)
    return t


def _smi(num_bytes: int) -> str:
    return f"{num_bytes // MiB:,} MiB ({num_bytes / GiB:.2f} GiB)"


def _gib(num_bytes: int | None) -> str:
    return "-" if num_bytes is None else f"{num_bytes / GiB:.2f} GiB"


def _rate(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value / 1e12:,.3f}".rstrip("0").rstrip(".") + f" {unit}"
