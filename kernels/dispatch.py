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

    def __init__(self, fn, do_not_specialize=()):
        self.fn = fn
        self.do_not_specialize = tuple(do_not_specialize)
        self._by_mode = {}

    def __getitem__(self, grid):
        mode = interpreter_requested()
        kernel = self._by_mode.get(mode)
        if kernel is None:
            import triton

            if mode:
                fix_interpreter_scalars()
            kernel = self._by_mode[mode] = triton.jit(self.fn, do_not_specialize=self.do_not_specialize)
        return kernel[grid]


def lazy_jit(fn=None, *, do_not_specialize=()):
    """`@lazy_jit` or `@lazy_jit(do_not_specialize=[...])`: arguments Triton would otherwise compile a
    variant for (an int equal to 1 or divisible by 16) whose value changes from step to step."""
    if fn is None:
        return lambda f: LazyKernel(f, do_not_specialize)
    return LazyKernel(fn, do_not_specialize)


def fix_interpreter_scalars() -> bool:
    """Let Triton's interpreter use scalars loaded from memory as loop bounds under numpy >= 2.4.

    The interpreter holds every scalar (program ids, loaded values, int arguments) as a numpy
    array of shape (1,) and converts loop bounds with `int(array)`, which numpy 2.4 stopped
    allowing ("only 0-dimensional arrays can be converted to Python scalars"). Triton 3.8 converts
    `array.squeeze()` instead; older releases (3.6 with numpy 2.5 on the GPU machine) fail every
    kernel with a data-dependent loop. No kernel-side cast helps, since no scalar is 0-d there,
    and a while loop would lose software pipelining on the GPU, so the interpreter gets 3.8's
    conversion. Numpy 1.25 to 2.3 only warn (DeprecationWarning), which fails the same way where
    warnings are errors, so the conversion goes in there too. Compiled kernels are untouched.
    Returns whether the conversion was installed.
    """
    from triton.runtime import interpreter

    if numpy_converts_size1_arrays():
        return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "kvplan_scalar_fix", False):
        return False

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.kvplan_scalar_fix = True
    patch_lang_tensor.original = original
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True


def numpy_converts_size1_arrays() -> bool:
    """Whether `int(array of shape (1,))` works without a DeprecationWarning (numpy < 1.25)."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            int(np.zeros(1, dtype=np.int32))
        except (TypeError, DeprecationWarning):  # numpy >= 2.4 refuses; 1.25 - 2.3 deprecate
            return False
    return True
