"""GPU catalog (memory as the device reports it, bandwidth, dense bf16 FLOP/s) and NVML detection.

Two totals per GPU. `memory_bytes` is what `nvidia-smi`/`rocm-smi` show, not the marketing figure:
an "80 GB" H100 reports 81,559 MiB (79.65 GiB). `cuda_total_bytes` is what `torch.cuda.mem_get_info()`
returns as total, the figure vLLM and SGLang size their pools from: the driver keeps the difference
(79.19 GiB on the same H100). It is known only where a published engine log or CUDA OOM message
printed it (rounded to 0.01 GiB; sources in docs/engines.md), and None elsewhere.
"""

import difflib
import re
from dataclasses import dataclass

from .errors import InputError
from .extras import require_extra
from .units import GiB, MiB


@dataclass(frozen=True)
class GPU:
    name: str
    memory_bytes: int
    bandwidth_bytes_per_s: float | None
    bf16_dense_flops: float | None
    aliases: tuple[str, ...] = ()
    note: str = ""
    cuda_total_bytes: int | None = None  # torch.cuda.mem_get_info() total; None where no log printed it
    cuda_total_basis: str = ""  # where cuda_total_bytes comes from

    def engine_total(self) -> tuple[int, str]:
        """(bytes, basis) of the total an engine sizing from cudaMemGetInfo sees: the CUDA-visible
        total where known, else the nvidia-smi total (a little more than the engine sees)."""
        if self.cuda_total_bytes is not None:
            return self.cuda_total_bytes, f"CUDA-visible total of {self.name} ({self.cuda_total_basis})"
        if not self.note and all(g.name != self.name for g in GPUS):
            return self.memory_bytes, f"{self.name}: the total as given"
        low, high = cuda_total_gap_range()
        return self.memory_bytes, (f"nvidia-smi total of {self.name}; its CUDA-visible total is unknown "
                                   f"({low:.2f}-{high:.2f}% less on the catalog GPUs where it is known), "
                                   "pass --gpu-memory with what the engine logs")


_TB = 1e12
_TFLOP = 1e12


def _logged(gib: float) -> int:
    """A total printed as X.XX GiB, in bytes (the print pins it to +/- 0.005 GiB)."""
    return round(gib * GiB)

GPUS: tuple[GPU, ...] = (
    GPU("H100-SXM", 81559 * MiB, 3.35 * _TB, 989.4 * _TFLOP, ("h100", "h100-sxm5", "h100-80gb", "h100_sxm"),
        cuda_total_bytes=_logged(79.19), cuda_total_basis="vLLM 0.19 total_memory=79.19GiB, llm-d-planner logs"),
    GPU("H100-PCIe", 81559 * MiB, 2.0 * _TB, 756 * _TFLOP, ("h100-pcie-80gb", "h100_pcie")),
    GPU("H200", 143771 * MiB, 4.8 * _TB, 989 * _TFLOP, ("h200-sxm", "h200-141gb"),
        cuda_total_bytes=_logged(139.72), cuda_total_basis="vLLM 'Free memory on device (7.34/139.72 GiB)', vllm #23192"),
    GPU("B200", 183359 * MiB, 8.0 * _TB, 2250 * _TFLOP, ("b200-180gb",)),
    GPU("A100-40GB", 40960 * MiB, 1.555 * _TB, 312 * _TFLOP, ("a100-40", "a100-sxm4-40gb"),
        cuda_total_bytes=_logged(39.39), cuda_total_basis="CUDA OOM 'total capacity of 39.39 GiB' on 40 GiB A100s"),
    GPU("A100-80GB", 81920 * MiB, 2.039 * _TB, 312 * _TFLOP, ("a100", "a100-80", "a100-sxm4-80gb"),
        cuda_total_bytes=_logged(79.15), cuda_total_basis="CUDA OOM 'total capacity of 79.15 GiB', vllm #4408"),
    GPU("L40S", 46068 * MiB, 0.864 * _TB, 362 * _TFLOP, ("l40s-48gb",),
        cuda_total_bytes=_logged(44.31), cuda_total_basis="vLLM total_gpu_memory (44.31GiB), vllm #15196"),
    GPU("L4", 23034 * MiB, 0.300 * _TB, 121 * _TFLOP, ("l4-24gb",),
        cuda_total_bytes=_logged(22.03), cuda_total_basis="CUDA OOM 'total capacity of 22.03 GiB' on L4s"),
    GPU("A10G", 23028 * MiB, 0.600 * _TB, None, ("a10g-24gb",), note="bf16 FLOP/s unpublished"),
    GPU("RTX-4090", 24564 * MiB, 1.008 * _TB, 165.2 * _TFLOP, ("4090", "rtx4090"),
        cuda_total_bytes=_logged(23.64), cuda_total_basis="CUDA OOM 'total capacity of 23.64 GiB', ali-vilab/VGen #104"),
    GPU("RTX-3090", 24576 * MiB, 0.936 * _TB, 71 * _TFLOP, ("3090", "rtx3090"),
        cuda_total_bytes=_logged(23.58), cuda_total_basis="vLLM total_gpu_memory (23.58GiB), vllm PR #14447"),
    GPU("MI300X", 192 * GiB, 5.3 * _TB, 1307.4 * _TFLOP, ("mi300x-192gb",)),
)


def cuda_total_gap_range() -> tuple[float, float]:
    """(smallest, largest) percent by which the CUDA-visible total falls short of nvidia-smi's, over the catalog."""
    gaps = [100 * (g.memory_bytes - g.cuda_total_bytes) / g.memory_bytes for g in GPUS if g.cuda_total_bytes]
    return min(gaps), max(gaps)


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "-").replace("_", "-")


_BY_NAME = {_key(g.name): g for g in GPUS} | {_key(a): g for g in GPUS for a in g.aliases}


def find_gpu(name: str) -> GPU:
    gpu = _BY_NAME.get(_key(name))
    if gpu is None:
        hint = difflib.get_close_matches(_key(name), list(_BY_NAME), n=1, cutoff=0.5)
        suffix = f"; did you mean {hint[0]!r}?" if hint else ""
        raise InputError(f"unknown --gpu {name!r}{suffix} (known: {', '.join(g.name for g in GPUS)}; "
                         "or --gpu auto, or --gpu-memory SIZE)")
    return gpu


def require_nvml() -> None:
    """`--gpu auto` reads the device through NVML; checked before any work."""
    require_extra("nvml", "pynvml", what="--gpu auto", or_else="name the GPU with --gpu")


def detect_gpu(index: int = 0) -> GPU:
    """The attached NVIDIA GPU via NVML (nvidia-ml-py), with its totals as measured.

    NVML's v2 memory info separates what the driver reserves; total minus reserved is the total
    CUDA hands out (cudaMemGetInfo), the one engines size from. Drivers without v2 leave it None."""
    require_nvml()
    import pynvml

    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            cuda_total = _nvml_cuda_total(pynvml, handle)
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        raise InputError(f"--gpu auto: NVML found no usable GPU ({exc})") from None
    known = catalog_match(name)
    return GPU(name, total, known.bandwidth_bytes_per_s if known else None,
               known.bf16_dense_flops if known else None, note="detected via NVML", cuda_total_bytes=cuda_total,
               cuda_total_basis="measured: NVML total - reserved" if cuda_total is not None else "")


def _nvml_cuda_total(pynvml, handle) -> int | None:
    v2 = getattr(pynvml, "nvmlMemory_v2", None)
    if v2 is None:
        return None
    try:
        info = pynvml.nvmlDeviceGetMemoryInfo(handle, version=v2)
    except (pynvml.NVMLError, TypeError):
        return None
    reserved = getattr(info, "reserved", None)
    return int(info.total) - int(reserved) if reserved is not None else None


# Words in NVML names -> catalog entry; the first match wins, so specific patterns go first.
_NVML_PATTERNS = (
    (("h100", "nvl"), None),  # 94 GB, not in the catalog: better no figures than the SXM's
    (("h100", "pcie"), "H100-PCIe"), (("h100",), "H100-SXM"), (("h200",), "H200"), (("b200",), "B200"),
    (("a100", "80gb"), "A100-80GB"), (("a100",), "A100-40GB"), (("l40s",), "L40S"), (("l4",), "L4"),
    (("a10g",), "A10G"), (("4090",), "RTX-4090"), (("3090",), "RTX-3090"), (("mi300x",), "MI300X"),
)


def catalog_match(device_name: str) -> GPU | None:
    """The catalog entry for a name as NVML reports it ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB")."""
    words = set(re.split(r"[^a-z0-9]+", device_name.lower()))
    for needles, name in _NVML_PATTERNS:
        if all(n in words for n in needles):
            return find_gpu(name) if name else None
    return None
