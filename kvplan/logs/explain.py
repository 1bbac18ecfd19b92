"""Compare an engine's start-up log with kvplan's prediction for the same settings.

`explain_log(log, model, dep, max_model_len)` dispatches to the engine's explainer:
explain_vllm.py (each memory term from the command, the pool from the logged available memory)
and explain_sglang.py (the pool from the log's own free-memory figures). Rows and their
judgement live in rows.py; the deployment a log describes in log_deployment.py.
"""

from ..model import LoadedModel
from ..plan.deployment import Deployment
from .explain_sglang import explain_sglang
from .explain_vllm import explain_vllm
from .rows import LogExplanation
from .startup import StartupLog


def explain_log(log: StartupLog, model: LoadedModel, dep: Deployment, max_model_len: int) -> LogExplanation:
    if log.engine == "sglang":
        return explain_sglang(log, model, dep, _settings(dep, None, "auto"))
    return explain_vllm(log, model, dep, max_model_len, _settings(dep, max_model_len, dep.kv_dtype))


def vllm_version_for(log: StartupLog) -> str | None:
    """The policy version a vLLM log asks for: its printed version, or V0 when it uses V0 templates."""
    if log.generation == "v0":
        return "v0"
    return log.version


def _settings(dep: Deployment, max_model_len: int | None, kv_name: str) -> dict:
    return {"tp": dep.tp, "pp": dep.pp, "max_model_len": max_model_len, "kv_dtype": kv_name,
            "block_size": dep.block_size, "max_num_batched_tokens": dep.max_num_batched_tokens,
            "gpu_memory_utilization": dep.gpu_memory_utilization, "engine": dep.engine}
