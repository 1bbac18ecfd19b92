"""Storage formats: bytes per element and the scale/zero-point overhead each format carries.

Sizes are exact rationals (`Fraction`) so byte totals can be rounded once, at the end.
"""

from dataclasses import dataclass
from fractions import Fraction

from .errors import InputError


PER_VECTOR = -1  # `group_elems` for one scale per whole vector (per token per head in a KV cache)


@dataclass(frozen=True)
class StorageFormat:
    """`bits` per stored element plus `scale_bits` for every `group_elems` elements.

    A scale group runs along the innermost dimension (a head vector for KV, a row of input
    features for weights). `group_elems == 0` means a per-tensor scale, which is negligible;
    `PER_VECTOR` one scale per vector whatever its length.
    """

    name: str
    bits: int
    scale_bits: int = 0
    group_elems: int = 0
    note: str = ""

    def vector_bytes(self, elems: int) -> Fraction:
        """Bytes to store one vector of `elems` elements with its scales."""
        data = Fraction(elems * self.bits, 8)
        if self.group_elems:
            groups = 1 if self.group_elems == PER_VECTOR else -(-elems // self.group_elems)
            data += Fraction(groups * self.scale_bits, 8)
        return data

    def bits_per_elem(self) -> Fraction:
        """Weight formats only: a per-vector scale has no per-element share without the vector length."""
        if self.group_elems == PER_VECTOR:
            raise ValueError(f"{self.name}: scale per vector; use vector_bytes")
        if not self.group_elems:
            return Fraction(self.bits)
        return Fraction(self.bits) + Fraction(self.scale_bits, self.group_elems)


# KV-cache formats (bytes per element in docs/estimate.md). int8 and int4 use one fp32 scale per
# token per head (per K and per V vector), the engines' layout; int4_g32/g64/g128 an fp16 scale +
# fp16 zero per group of 32/64/128; nvfp4 an fp8 scale per 16; mxfp4 an e8m0 scale per 32. fp8
# uses per-tensor scales (vLLM), which do not grow with tokens.
KV_FORMATS = {
    "fp32": StorageFormat("fp32", 32),
    "bf16": StorageFormat("bf16", 16),
    "fp16": StorageFormat("fp16", 16),
    "fp8": StorageFormat("fp8", 8, note="per-tensor scale"),
    "fp8_e4m3": StorageFormat("fp8_e4m3", 8, note="per-tensor scale"),
    "fp8_e5m2": StorageFormat("fp8_e5m2", 8, note="per-tensor scale"),
    "int8": StorageFormat("int8", 8, scale_bits=32, group_elems=PER_VECTOR, note="fp32 scale per token per head"),
    "int4": StorageFormat("int4", 4, scale_bits=32, group_elems=PER_VECTOR, note="fp32 scale per token per head"),
    "int4_g32": StorageFormat("int4_g32", 4, scale_bits=32, group_elems=32, note="fp16 scale + fp16 zero per 32"),
    "int4_g64": StorageFormat("int4_g64", 4, scale_bits=32, group_elems=64, note="fp16 scale + fp16 zero per 64"),
    "int4_g128": StorageFormat("int4_g128", 4, scale_bits=32, group_elems=128, note="fp16 scale + fp16 zero per 128"),
    "nvfp4": StorageFormat("nvfp4", 4, scale_bits=8, group_elems=16, note="fp8 scale per 16"),
    "mxfp4": StorageFormat("mxfp4", 4, scale_bits=8, group_elems=32, note="e8m0 scale per 32"),
}

KV_DTYPE_ALIASES = {
    "float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
    "fp8_e4m3fn": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2",
}


@dataclass(frozen=True)
class KVFormat:
    """A KV storage format as applied to head vectors of a given length.

    `state` is the format of recurrent (Mamba/DeltaNet) state, which engines keep in the model's
    compute dtype whatever the KV cache dtype (vLLM's mamba_cache_dtype `auto`).
    """

    fmt: StorageFormat
    state: StorageFormat = KV_FORMATS["bf16"]

    def state_bytes(self, elems: int) -> int:
        return elems * self.state.bits // 8

    @property
    def name(self) -> str:
        return self.fmt.name

    def vector_bytes(self, elems: int) -> Fraction:
        return self.fmt.vector_bytes(elems)

    @property
    def compute_elem_bytes(self) -> int:
        """Bytes of the element type a torch pool would use for this format (fp8/int8 -> 1)."""
        return max(1, self.fmt.bits // 8)


def kv_format(name: str, weight_compute_dtype: str = "bf16") -> KVFormat:
    key = str(name).strip().lower()
    if key == "auto":
        key = weight_compute_dtype
    key = KV_DTYPE_ALIASES.get(key, key)
    if key not in KV_FORMATS:
        raise InputError(f"unknown --kv-dtype {name!r}; choose one of auto, {', '.join(KV_FORMATS)}")
    state = KV_FORMATS.get(weight_compute_dtype, KV_FORMATS["bf16"])
    return KVFormat(KV_FORMATS[key], state)


@dataclass(frozen=True)
class WeightFormat:
    """How a checkpoint stores weights: matmul weights at `linear`, everything else at `other_bits`.

    Embeddings, lm_head, norms and biases stay 16-bit in quantized checkpoints (AWQ, GPTQ, fp8,
    MXFP4, NVFP4 as vLLM loads them); `fp32` stores everything at 32 bits.
    """

    name: str
    linear: StorageFormat
    other_bits: int
    compute_dtype: str  # the activation / KV "auto" dtype

    @property
    def quantized(self) -> bool:
        return self.linear.bits < self.other_bits


WEIGHT_FORMATS = {
    "fp32": WeightFormat("fp32", StorageFormat("fp32", 32), 32, "fp32"),
    "bf16": WeightFormat("bf16", StorageFormat("bf16", 16), 16, "bf16"),
    "fp16": WeightFormat("fp16", StorageFormat("fp16", 16), 16, "fp16"),
    "fp8": WeightFormat("fp8", StorageFormat("fp8", 8), 16, "bf16"),
    "int8": WeightFormat("int8", StorageFormat("int8", 8), 16, "bf16"),
    # int4 with an fp16 scale per group of 128 input features
    "int4": WeightFormat("int4", StorageFormat("int4", 4, scale_bits=16, group_elems=128), 16, "fp16"),
    # AWQ / GPTQ: int4 with an fp16 scale and a packed 4-bit zero point per group of 128
    "awq": WeightFormat("awq", StorageFormat("awq", 4, scale_bits=20, group_elems=128), 16, "fp16"),
    "gptq": WeightFormat("gptq", StorageFormat("gptq", 4, scale_bits=20, group_elems=128), 16, "fp16"),
    "mxfp4": WeightFormat("mxfp4", StorageFormat("mxfp4", 4, scale_bits=8, group_elems=32), 16, "bf16"),
    "nvfp4": WeightFormat("nvfp4", StorageFormat("nvfp4", 4, scale_bits=8, group_elems=16), 16, "bf16"),
}

WEIGHT_DTYPE_ALIASES = {
    "float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
    "auto": None,
}


def weight_format(name: str | None, default: str = "bf16") -> WeightFormat:
    key = default if name is None else str(name).strip().lower()
    key = WEIGHT_DTYPE_ALIASES.get(key, key) or default
    if key not in WEIGHT_FORMATS:
        raise InputError(f"unknown --dtype {name!r}; choose one of {', '.join(WEIGHT_FORMATS)}")
    return WEIGHT_FORMATS[key]


def torch_dtype_to_format(config_dtype: str | None) -> str:
    """`torch_dtype`/`dtype` of a config.json -> our weight format name (bf16 when absent)."""
    if not config_dtype:
        return "bf16"
    key = str(config_dtype).replace("torch.", "").lower()
    return WEIGHT_DTYPE_ALIASES.get(key) or ({"bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}.get(key, "bf16"))
