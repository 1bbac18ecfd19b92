"""The paged-KV engine: a torch KV pool laid out by `kvplan.model.grouping.page_layout`, driven by the
same `kvplan.paging` allocator and scheduler `kvplan simulate` uses, running transformers models
through the registered "kvplan_paged" attention function.

Importing this package imports torch (never done at `import kvplan`).

    from kvplan import Deployment, estimate, find_gpu, load_model
    from kvplan.runtime import EngineConfig, LLMEngine, load_engine_model
    loaded = load_model("path/to/model")
    est = estimate(loaded, Deployment(gpu=find_gpu("H100")))
    config = EngineConfig(num_blocks=est.num_blocks, block_size=est.block_size, max_num_seqs=est.max_num_seqs,
                          max_num_batched_tokens=est.max_num_batched_tokens)
    engine = LLMEngine(load_engine_model(loaded, device="cuda"), loaded.spec, config)
    outputs = engine.generate([[1, 2, 3]], max_tokens=16)
"""

from .engine import EngineConfig, LLMEngine, StepOutput
from .kv_pool import KVPool
from .model_loader import LoadedEngineModel, check_supported, load_engine_model
from .sampler import GREEDY, SamplingParams

__all__ = ["EngineConfig", "GREEDY", "KVPool", "LLMEngine", "LoadedEngineModel", "SamplingParams", "StepOutput",
           "check_supported", "load_engine_model"]
