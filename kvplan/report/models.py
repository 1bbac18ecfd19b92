"""The bundled-spec listing: one ModelRow per spec (table, JSON, CSV and markdown all show these rows)."""

from dataclasses import dataclass

from ..dtypes import kv_format
from ..model import bundled_names, load_model
from .document import ID, TEXT, Line, Records, Report, Table, col, data
from .common import FORMATS
from .formats import emit


def _billions(n: int | None) -> str:
    return "-" if not n else f"{n / 1e9:,.2f}B"


@dataclass(frozen=True)
class ModelRow:
    name: str = col("name", kind=ID, code=True)
    hf_id: str | None = data()
    model_type: str = data()
    layout: str = col("attention layout", kind=TEXT, drop=1)
    kv_bytes_per_token_bf16: int = col("KV B/token (bf16)")
    params: int | None = col("params", show=_billions)
    params_active: int | None = data()
    params_official: str | None = data()
    max_position_embeddings: int | None = col("max ctx")
    checkpoint_dtype: str | None = data()


def model_rows() -> list[ModelRow]:
    rows = []
    for path in sorted(set(bundled_names().values())):
        spec = load_model(path.stem).spec
        rows.append(ModelRow(
            name=spec.name, hf_id=spec.hf_id, model_type=spec.model_type, layout=spec.layout(),
            kv_bytes_per_token_bf16=int(spec.bytes_per_token(kv_format("bf16"))),
            params=spec.params.total if spec.params else None,
            params_active=spec.params.active if spec.params else None,
            params_official=spec.params_official, max_position_embeddings=spec.max_position_embeddings,
            checkpoint_dtype=spec.weight_dtype,
        ))
    return rows


def models_report() -> Report:
    table = Table(ModelRow, model_rows())
    records = Records.of(table)
    blocks = [Line(f"{len(table.rows)} bundled model specs", "title"), table,
              Line("params in billions (10^9); KV B/token: bytes per token over every layer in bf16", "dim")]
    return Report("kvplan models", FORMATS, blocks, data=records, records=records)


def render_models(fmt: str = "table") -> None:
    emit(models_report(), fmt)
