"""The bundled-spec listing."""

import csv
import sys

from ..dtypes import kv_format
from ..model import bundled_names, load_model
from .common import check_format, console, md_table, print_json


def model_rows() -> list[dict]:
    rows = []
    for path in sorted(set(bundled_names().values())):
        spec = load_model(path.stem).spec
        rows.append({
            "name": spec.name, "hf_id": spec.hf_id, "model_type": spec.model_type, "layout": spec.layout(),
            "kv_bytes_per_token_bf16": int(spec.bytes_per_token(kv_format("bf16"))),
            "params": spec.params.total if spec.params else None,
            "params_active": spec.params.active if spec.params else None,
            "params_official": spec.params_official, "max_position_embeddings": spec.max_position_embeddings,
            "checkpoint_dtype": spec.weight_dtype,
        })
    return rows


def render_models(fmt: str = "table") -> None:
    fmt = check_format(fmt)
    rows = model_rows()
    if fmt == "json":
        print_json(rows)
        return
    if fmt == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return
    headers = ["name", "attention layout", "KV B/token (bf16)", "params", "max ctx"]
    table = [[r["name"], r["layout"], f"{r['kv_bytes_per_token_bf16']:,}",
              f"{r['params'] / 1e9:,.2f}B" if r["params"] else "-", f"{r['max_position_embeddings']:,}"] for r in rows]
    if fmt == "markdown":
        sys.stdout.write(md_table(headers, table) + "\n")
        return
    from rich.table import Table

    t = Table(title=f"{len(rows)} bundled model specs (params = 10^9)")
    for h in headers:
        t.add_column(h, justify="right" if h != "name" and h != "attention layout" else "left")
    for row in table:
        t.add_row(*row)
    console().print(t)
