"""The step loop: schedule, copy-on-write, run the model, sample, feed tokens back.

    engine = LLMEngine(model, spec, EngineConfig(num_blocks=est.num_blocks, block_size=16))
    outputs = engine.generate([[1, 2, 3], [4, 5]], max_tokens=8)

The engine owns no allocation policy: `kvplan.paging` (the same KVCacheManager and Scheduler
`kvplan simulate` drives with a clock) decides what runs, what is cached, what is preempted;
the engine adds tensors. Per step:

    1. scheduler.schedule()          -> chunks to run, preempted requests, COW (src, dst) pairs
    2. pool.copy_blocks(copies)      before any layer writes into a copied block
    3. runner: pack, forward         K/V of the new tokens land in the pool, logits for the rows
                                     whose chunk reaches the end of the request
    4. sampler                       one host sync per step
    5. scheduler.update(...)         appends tokens, hashes full blocks, finishes, frees
"""

import itertools
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..paging import KVCacheManager, Request, Scheduler, SchedulerConfig
from ..spec import ModelSpec
from ..spec.grouping import page_layout
from .kv_pool import KVPool
from .model_loader import LoadedEngineModel
from .runner import ModelRunner
from .sampler import GREEDY, Sampler, SamplingParams


@dataclass(frozen=True)
class EngineConfig:
    num_blocks: int
    block_size: int = 16
    kv_dtype: str = "auto"  # auto: the model's dtype
    max_model_len: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True


@dataclass
class StepOutput:
    num_tokens: int  # tokens run through the model this step
    num_decode: int
    num_prefill: int
    sampled: dict[str, int]
    logits: torch.Tensor | None  # [K, vocab] of the sampled rows, in `logits_request_ids` order
    logits_request_ids: list[str]
    finished: list[Request]
    preempted: list[Request]
    num_copies: int
    extra: dict = field(default_factory=dict)


class LLMEngine:
    def __init__(self, model: LoadedEngineModel, spec: ModelSpec, config: EngineConfig):
        from ..dtypes import kv_format

        self.spec, self.config, self.model = spec, config, model
        compute = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[model.dtype]
        self.kv = kv_format(config.kv_dtype, compute)
        self.layout = page_layout(spec, self.kv)
        self.pool = KVPool(self.layout, config.num_blocks, config.block_size, self.kv, model.device)
        self.kv_manager = KVCacheManager(self.layout, config.num_blocks, config.block_size,
                                         enable_prefix_caching=config.enable_prefix_caching)
        self.scheduler = Scheduler(self.kv_manager, SchedulerConfig(
            max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens,
            enable_chunked_prefill=config.enable_chunked_prefill))
        self.runner = ModelRunner(model.model, self.pool, self.kv_manager)
        self.sampler = Sampler(model.device)
        self.requests: dict[str, Request] = {}
        self._params: dict[str, SamplingParams] = {}
        self._ids = itertools.count()

    # --- requests ---

    def add_request(self, prompt_token_ids: list[int], max_tokens: int, sampling: SamplingParams = GREEDY, *,
                    request_id: str | None = None, eos_token_id: int | None = None, arrival_time: float = 0.0,
                    prefix_group: str | None = None) -> Request:
        if not prompt_token_ids:
            raise InputError("a request needs at least one prompt token")
        if max_tokens < 1:
            raise InputError(f"max_tokens must be >= 1, got {max_tokens}")
        total = len(prompt_token_ids) + max_tokens
        if self.config.max_model_len is not None and total > self.config.max_model_len:
            raise InputError(f"request of {total} tokens exceeds max_model_len {self.config.max_model_len}")
        need = self.layout.blocks_per_request(total, self.config.block_size)
        if need > self.config.num_blocks:
            raise InputError(f"request of {total} tokens needs {need} blocks; the pool has {self.config.num_blocks}")
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise InputError(f"duplicate request id {request_id!r}")
        req = Request(request_id=request_id, prompt_token_ids=list(prompt_token_ids), max_tokens=max_tokens,
                      arrival_time=arrival_time, eos_token_id=eos_token_id, prefix_group=prefix_group)
        self.requests[request_id] = req
        self._params[request_id] = sampling
        self.scheduler.add_request(req)
        return req

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    # --- the loop ---

    def step(self) -> StepOutput:
        out = self.scheduler.schedule()
        copies = list(out.copies)
        self.pool.copy_blocks(copies)
        sampled: dict[str, int] = {}
        logits, ids = None, []
        num_tokens = num_decode = 0
        if out.scheduled:
            prepared = self.runner.prepare(out.scheduled)
            num_tokens, num_decode = prepared.num_tokens, prepared.meta.num_decode
            logits = self.runner.execute(prepared)
            ids = [r.request_id for r in prepared.sample_requests]
            if ids:
                tokens = self.sampler.sample(logits, ids, [self._params[i] for i in ids])
                sampled = dict(zip(ids, tokens))
        finished = self.scheduler.update(out, sampled)
        for req in finished:
            self.sampler.forget(req.request_id)
            self._params.pop(req.request_id, None)
        return StepOutput(num_tokens, num_decode, len(out.scheduled) - num_decode, sampled, logits, ids, finished,
                          list(out.preempted), len(copies))

    def run(self, on_step=None) -> list[Request]:
        """Step until every request finished; `on_step(engine, output)` after each step."""
        finished: list[Request] = []
        while self.scheduler.has_unfinished_requests():
            output = self.step()
            finished.extend(output.finished)
            if on_step is not None:
                on_step(self, output)
        return finished

    def generate(self, prompts: list[list[int]], max_tokens: int, sampling: SamplingParams = GREEDY) -> list[list[int]]:
        reqs = [self.add_request(p, max_tokens, sampling) for p in prompts]
        self.run()
        return [list(r.output_token_ids) for r in reqs]

    # --- accounting ---

    @property
    def num_free_blocks(self) -> int:
        return self.kv_manager.block_pool.num_free_blocks
