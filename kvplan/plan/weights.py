"""Weight bytes: exact from a checkpoint's headers, else parameter count x storage format."""

from dataclasses import dataclass
from fractions import Fraction

from ..dtypes import WeightFormat, weight_format
from ..model import LoadedModel, ParamCount, ceil_bytes


@dataclass(frozen=True)
class Weights:
    total_bytes: int | None  # whole model
    dtype: str  # the storage format the figure assumes
    basis: str  # where the number came from


def bytes_from_params(params: ParamCount, fmt: WeightFormat, quantized_scope: str = "linear") -> int:
    """Quantized formats store matmul weights low-bit; embeddings, lm_head, norms, biases and vision/audio
    towers (which engines load beside the text model) stay 16-bit."""
    bits = fmt.linear.bits_per_elem()
    other_bits = Fraction(fmt.other_bits)
    kept = params.embedding + params.lm_head + params.other + params.multimodal
    if quantized_scope == "experts":
        low, high = params.experts, params.linear + kept
    else:
        low, high = params.linear + params.experts, kept
    total = low * bits + high * other_bits
    return ceil_bytes(total / 8)  # bits -> bytes


def weight_bytes(model: LoadedModel, dtype: str | None, override_bytes: int | None) -> Weights:
    """`dtype`: the format to size weights in, or None for the checkpoint's own (see dtype_plan)."""
    spec = model.spec
    if override_bytes is not None:
        return Weights(override_bytes, dtype or spec.weight_dtype, "--weights")
    if model.checkpoint is not None and dtype is None:
        return Weights(model.checkpoint.total_bytes, spec.weight_dtype, model.checkpoint.source)
    name = dtype or spec.weight_dtype
    if name.startswith("unknown:"):
        return Weights(None, name, f"unknown: the config's quantization ({name[8:]}) is not sized from the config "
                                   "(give --weights, or a model directory with safetensors)")
    fmt = weight_format(name)
    if spec.params is None:
        return Weights(None, fmt.name, "unknown: no parameter count for this model (give --weights)")
    scope = spec.quantized_scope if dtype is None else "linear"
    params = spec.params
    towers = f" + {params.multimodal:,} vision/audio tower params" if params.multimodal else ""
    return Weights(bytes_from_params(params, fmt, scope), fmt.name,
                   f"{params.total:,} params{towers} x {fmt.name}"
                   + (" (experts only)" if scope == "experts" and fmt.quantized else ""))
