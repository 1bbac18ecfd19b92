"""The step loop: schedule, copy-on-write, run the model, sample, feed tokens back.

    engine = LLMEngine(model, spec, EngineConfig(num_blocks=est.num_blocks, block_size=est.block_size,
                                                 max_num_seqs=est.max_num_seqs,
                                                 max_num_batched_tokens=est.max_num_batched_tokens))
    outputs = engine.generate([[1, 2, 3], [4, 5]], max_tokens=8)

The engine owns no allocation policy: `kvplan.paging` (the same KVCacheManager and Scheduler
`kvplan simulate` drives with a clock) decides what runs, what is cached, what is preempted;
the engine adds tensors. Per step:

    1. scheduler.schedule()          -> chunks to run, preempted requests, COW (src, dst) pairs
    2. pool.copy_blocks(copies)      before any layer writes into a copied block
    3. runner: pack, forward         K/V of the new tokens land in the pool, logits for the rows
                                     whose chunk reaches the end of the request
    4. sampler                       one host sync per step
    5. scheduler.update(...)         appends tokens, finishes, frees (full blocks were hashed
                                     when allocated in 1, as in vLLM)
    6. parallel sampling (n > 1)     after a request's first token, n - 1 children sampled from
                                     the same logits row are forked: they share every block,
                                     and the shared partial last block is copied on first write
"""

import itertools
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..paging.contiguous import ReservingKVCacheManager, reservation_blocks
from ..paging.kv_cache_manager import KVCacheManager
from ..paging.request import Request
from ..paging.scheduler import Scheduler, SchedulerConfig
from ..model import ModelSpec
from ..model.grouping import page_layout
from .kv_pool import KVPool
from .model_loader import LoadedEngineModel
from .runner import ModelRunner
from .sampler import GREEDY, Sampler, SamplingParams


@dataclass(frozen=True)
class EngineConfig:
    """The pool and scheduler limits, as an estimate resolved them (the engine policies hold the defaults)."""

    num_blocks: int
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_dtype: str = "auto"  # auto: the model's dtype
    max_model_len: int | None = None
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    contiguous: bool = False  # baseline: every sequence reserves its blocks at admission (paging.contiguous)


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
    # Allocator state while the model ran (after scheduling, before finished requests were freed):
    blocks_in_use: int = 0
    live_slots: int = 0  # block slots holding a token's KV (shared blocks once)
    num_running: int = 0
    context_tokens: int = 0  # sum over scheduled chunks of the positions they attend up to


class LLMEngine:
    def __init__(self, model: LoadedEngineModel, spec: ModelSpec, config: EngineConfig):
        from ..dtypes import kv_format

        self.spec, self.config, self.model = spec, config, model
        compute = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[model.dtype]
        self.kv = kv_format(config.kv_dtype, compute)
        self.layout = page_layout(spec, self.kv)
        self.pool = KVPool(self.layout, config.num_blocks, config.block_size, self.kv, model.device)
        if config.contiguous:
            if config.max_model_len is None:
                raise InputError("the contiguous baseline needs max_model_len")
            self.kv_manager = ReservingKVCacheManager(self.layout, config.num_blocks, config.block_size,
                                                      config.max_model_len, config.max_num_batched_tokens)
        else:
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
                    prefix_group: str | None = None, n: int = 1) -> Request:
        """Queue a request; `n > 1` samples n sequences that share the prompt's blocks (ids `<id>`, `<id>.1`, ...)."""
        if not prompt_token_ids:
            raise InputError("a request needs at least one prompt token")
        if max_tokens < 1:
            raise InputError(f"max_tokens must be >= 1, got {max_tokens}")
        total = len(prompt_token_ids) + max_tokens
        if self.config.max_model_len is not None and total > self.config.max_model_len:
            raise InputError(f"request of {total} tokens exceeds max_model_len {self.config.max_model_len}")
        chunk = min(self.config.max_num_batched_tokens, total)  # a (re)prefill chunk reads whole windows
        need = self.layout.blocks_per_request(total, self.config.block_size, chunk)
        if self.config.contiguous:
            need = reservation_blocks(self.layout, self.config.max_model_len, self.config.block_size,
                                      self.config.max_num_batched_tokens)
        if need > self.config.num_blocks:
            raise InputError(f"request of {total} tokens needs {need} blocks; the pool has {self.config.num_blocks}")
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise InputError(f"duplicate request id {request_id!r}")
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}")
        req = Request(request_id=request_id, prompt_token_ids=list(prompt_token_ids), max_tokens=max_tokens,
                      arrival_time=arrival_time, eos_token_id=eos_token_id, prefix_group=prefix_group, num_samples=n)
        self.requests[request_id] = req
        self._params[request_id] = sampling
        self.scheduler.add_request(req)
        return req

    def warm_up(self) -> int:
        """Compile the attention kernels' variants (CUDA / interpreter) before a timed run; see
        `ModelRunner.warm_up_kernels`. Returns the warm-up forwards run (0 on the torch path)."""
        return self.runner.warm_up_kernels()

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    # --- the loop ---

    def step(self) -> StepOutput:
        out = self.scheduler.schedule()
        self.pool.copy_blocks(out.copies)
        sampled: dict[str, int] = {}
        children: dict[str, list[int]] = {}
        logits, ids = None, []
        num_tokens = num_decode = 0
        if out.scheduled:
            prepared = self.runner.prepare(out.scheduled)
            num_tokens, num_decode = prepared.num_tokens, prepared.meta.num_decode
            logits = self.runner.execute(prepared)
            ids = [r.request_id for r in prepared.sample_requests]
            if ids:
                params = [self._params[i] for i in ids]
                tokens = self.sampler.sample(logits, ids, params)
                sampled = dict(zip(ids, tokens))
                children = self._sample_children(logits, prepared.sample_requests, params)
        blocks, live, running = self.num_used_blocks, self.live_slots(out.scheduled), self.scheduler.num_running
        context = sum(s.start_position + s.num_new_tokens for s in out.scheduled)
        finished = self.scheduler.update(out, sampled)
        finished += self._fork(children)
        for req in finished:
            self.sampler.forget(req.request_id)
            self._params.pop(req.request_id, None)
        return StepOutput(num_tokens, num_decode, len(out.scheduled) - num_decode, sampled, logits, ids, finished,
                          list(out.preempted), len(out.copies), blocks, live, running, context)

    def _sample_children(self, logits, reqs: list[Request], params: list[SamplingParams]) -> dict[str, list[int]]:
        """First tokens of the n - 1 extra samples, from their parent's first logits row."""
        children = {}
        for row, (req, p) in enumerate(zip(reqs, params)):
            if req.num_samples > 1 and req.num_output_tokens == 0:
                ids = [f"{req.request_id}.{i}" for i in range(1, req.num_samples)]
                child_params = [SamplingParams(p.temperature, p.top_p, None if p.seed is None else p.seed + i)
                                for i in range(1, req.num_samples)]
                for cid, cp in zip(ids, child_params):
                    self._params[cid] = cp
                rows = logits[row:row + 1].expand(len(ids), -1)
                children[req.request_id] = self.sampler.sample(rows, ids, child_params)
        return children

    def _fork(self, children: dict[str, list[int]]) -> list[Request]:
        """Children start with the parent's prompt and their own first token; finished ones never hold KV."""
        finished = []
        for parent_id, tokens in children.items():
            parent = self.requests[parent_id]
            for i, token in enumerate(tokens, 1):
                child = Request(request_id=f"{parent_id}.{i}", prompt_token_ids=list(parent.prompt_token_ids),
                                max_tokens=parent.max_tokens, arrival_time=parent.arrival_time,
                                eos_token_id=parent.eos_token_id, prefix_group=parent.prefix_group)
                self.requests[child.request_id] = child
                child.append_token(token)
                if child.is_finished:  # one token and done: it never needs KV of its own
                    finished.append(child)
                elif parent.is_finished:  # the parent stopped (EOS) and freed its blocks: recompute
                    self.scheduler.add_request(child)
                else:
                    self.scheduler.fork(parent, child)
            parent.num_samples = 1
        return finished

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
        return self.kv_manager.num_free_blocks

    @property
    def num_used_blocks(self) -> int:
        return self.kv_manager.num_used_blocks  # the contiguous baseline's reservations included

    def live_slots(self, scheduled=()) -> int:
        """Block slots holding KV of a running sequence's token, counting this step's `scheduled` chunks."""
        if not self.config.contiguous:
            return self.kv_manager.num_filled_slots  # allocate_slots already counted the step's tokens
        new = {s.request.request_id: s.num_new_tokens for s in scheduled}
        groups = [g.attention for g in self.layout.groups]  # the reservation's base-class count is not live
        return sum(g.tokens_held(r.num_computed_tokens + new.get(r.request_id, 0))
                   for r in self.scheduler.running for g in groups)
