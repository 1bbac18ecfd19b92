"""Backend choice for the paged-KV kernels, and lazy Triton decoration.

Triton decides between its compiler and its CPU interpreter when a function is
*decorated*, by reading TRITON_INTERPRET. Decorating at import time would freeze
that choice at whatever the environment held when kvplan.kernels was first
imported (a test module that sets the variable after another module imported us
would then fail with "0 active drivers"). So kernels stay plain functions until
their first launch and are decorated once per mode.
"""

from __future__ import annotations

import importlib.util
import os

import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None


def interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def kernel_backend(device: torch.device | str) -> str:
    """Which implementation `paged_decode` / `store_kv` use for tensors on `device`.

    "triton" on CUDA, "triton-interpret" on CPU (or CUDA) when TRITON_INTERPRET=1,
    otherwise "torch" (the reference implementation).
    """
    device = torch.device(device)
    if not HAS_TRITON or device.type not in ("cuda", "cpu"):
        return "torch"
    if interpreter_requested():
        return "triton-interpret"
    return "triton" if device.type == "cuda" else "torch"


class LazyKernel:
    """A Triton kernel decorated on first launch, separately for each mode."""

    def __init__(self, fn):
        self.fn = fn
        self._by_mode = {}

    def __getitem__(self, grid):
        mode = interpreter_requested()
        kernel = self._by_mode.get(mode)
        if kernel is None:
            import triton

            kernel = self._by_mode[mode] = triton.jit(self.fn)
        return kernel[grid]


def lazy_jit(fn) -> LazyKernel:
    return LazyKernel(fn)
