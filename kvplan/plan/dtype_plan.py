"""Which formats a deployment stores weights in and computes in, from the checkpoint and --dtype.

One place decides this for estimate, simulate, profile, sweep and explain-log:
  - no --dtype (or `auto`): the checkpoint's own storage; fp32 checkpoints are served as bf16,
    as vLLM's `--dtype auto` does;
  - a float --dtype (bf16/fp16/fp32) on a quantized checkpoint sets only the compute dtype: the
    AWQ/GPTQ/fp8/MXFP4 weights stay as stored (what `vllm serve --dtype half` does);
  - any other --dtype re-sizes the weights in that format.
The compute dtype is also what `--kv-dtype auto` means.
"""

from dataclasses import dataclass

from ..dtypes import KVFormat, kv_format, weight_format
from ..model import ModelSpec

FLOAT_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DtypePlan:
    weights: str | None  # format to size weights in; None = the checkpoint's own (exact bytes when present)
    weights_label: str  # the storage format the report names
    compute: str  # activations, recurrent state, and the KV cache under --kv-dtype auto

    def kv(self, kv_dtype: str) -> KVFormat:
        return kv_format(kv_dtype, self.compute)

    @property
    def act_elem_bytes(self) -> int:
        return 4 if self.compute == "fp32" else 2


def canonical_weight_dtype(name: str | None) -> str | None:
    """`None`/`auto` -> None; any spelling (`bfloat16`, `BF16`, `half`) -> the format's name."""
    if name is None or str(name).strip().lower() == "auto":
        return None
    return weight_format(name).name


def dtype_plan(spec: ModelSpec, requested: str | None, notes: list[str] | None = None) -> DtypePlan:
    notes = [] if notes is None else notes
    asked = canonical_weight_dtype(requested)
    stored = spec.weight_dtype
    served_compute = "bf16" if spec.compute_dtype == "fp32" else spec.compute_dtype
    if asked is None:
        if stored == "fp32":
            notes.append("fp32 checkpoint served as bf16, as vLLM's --dtype auto does (--dtype fp32 to keep it)")
            return DtypePlan("bf16", "bf16", "bf16")
        return DtypePlan(None, stored, served_compute)
    if asked in FLOAT_DTYPES and stored not in FLOAT_DTYPES:
        notes.append(f"--dtype {asked} sets the compute dtype; the checkpoint's {stored} weights stay as stored "
                     "(as vLLM does)")
        return DtypePlan(None, stored, asked)
    compute = asked if asked in FLOAT_DTYPES else weight_format(asked).compute_dtype
    return DtypePlan(None if asked == stored else asked, asked, compute)
