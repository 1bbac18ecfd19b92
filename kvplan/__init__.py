"""kvplan: KV-cache capacity planner and live profiler for LLM serving.

    from kvplan import load_model, Deployment, estimate
    est = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("H100")))
"""

from .errors import KvplanError
from .hardware import find_gpu
from .plan import Deployment, Estimate, estimate
from .model import ModelSpec, load_model

__version__ = "0.1.0"
__all__ = ["Deployment", "Estimate", "KvplanError", "ModelSpec", "estimate", "find_gpu", "load_model"]
