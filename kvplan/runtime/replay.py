"""Replay a workload through the engine and record what every step held.

Workload items (`kvplan.simulation.workload.WorkItem`) carry synthetic token ids; they are folded
into the model's vocabulary by a fixed hash, so equal ids stay equal (shared prefixes still hit
the prefix cache) and distinct prompts stay distinct. Arrival times are seconds of wall clock
from the start of the replay; when nothing is in flight the replay sleeps until the next one.

Outputs are greedy, except for requests of n > 1 samples: those sample at temperature 1 with a
seed per request (the k-th child uses seed + k), so the samples differ, as the simulator's
synthetic outputs do. Greedy samples would be identical token for token: their full blocks would
hash alike and a preempted sample would be re-admitted on its sibling's blocks, which the
simulator never sees.

Per step (`StepSample`), read after scheduling and before finished requests are freed, as the
simulator does: blocks in use, filled slots, running and waiting requests, cumulative
preemptions, torch allocated / reserved and NVML used memory (no device sync: the sampler's one
host read per step already orders the step).

| figure                  | definition (the simulator's, weighted per step)                      |
|-------------------------|----------------------------------------------------------------------|
| max_concurrent_users    | most sequences running in one step                                   |
| memory_utilization      | sum(filled slots) / sum(allocated slots) over steps                  |
| internal_fragmentation  | 1 - memory_utilization                                               |
| decode_tokens_per_s     | tokens sampled in decode-only steps / wall time of those steps       |
"""

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from ..errors import FindingError, InputError
from .engine import LLMEngine
from .memory import DeviceMemory
from .sampler import GREEDY, SamplingParams

_M64 = (1 << 64) - 1
_MAX_SAMPLES = 1024  # the workloads' bound on n: request k's samples use seeds k * 1024 + 0..n-1


def _mix64(x: int) -> int:
    """splitmix64's finalizer: every input bit reaches every output bit."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def vocab_ids(token_ids: list[int], vocab_size: int) -> list[int]:
    """Synthetic ids -> ids below vocab_size (ids already in range are kept)."""
    return [_mix64(t & _M64) % vocab_size if t >= vocab_size or t < 0 else t for t in token_ids]


@dataclass(frozen=True)
class StepSample:
    step: int
    time_s: float  # since the replay started
    duration_s: float
    num_tokens: int
    num_decode: int
    num_prefill: int
    blocks_in_use: int
    filled_slots: int
    tokens_held: int  # computed tokens of running sequences (logical, before sharing)
    running: int
    waiting: int
    preemptions: int  # cumulative
    allocated_bytes: int | None
    reserved_bytes: int | None
    nvml_used_bytes: int | None


@dataclass
class RunMeasurement:
    mode: str  # paged | contiguous
    num_blocks: int
    block_size: int
    kv_pool_bytes: int
    samples: list[StepSample] = field(default_factory=list)
    requests_added: int = 0
    sequences_finished: int = 0
    output_tokens: int = 0
    preemptions: int = 0
    decode_tokens: int = 0
    decode_time_s: float = 0.0
    decode_context_tokens: int = 0  # sum over decode-only steps of the tokens attended
    total_time_s: float = 0.0
    blocks_leaked: int | None = None
    interrupted: bool = False
    out_of_memory: str | None = None  # where the device ran out, when it did

    @property
    def max_concurrent_users(self) -> int:
        return max((s.running for s in self.samples), default=0)

    @property
    def peak_blocks_in_use(self) -> int:
        return max((s.blocks_in_use for s in self.samples), default=0)

    @property
    def memory_utilization(self) -> float | None:
        allocated = sum(s.blocks_in_use for s in self.samples) * self.block_size
        return sum(s.filled_slots for s in self.samples) / allocated if allocated else None

    @property
    def internal_fragmentation(self) -> float | None:
        u = self.memory_utilization
        return None if u is None else 1.0 - u

    @property
    def decode_tokens_per_s(self) -> float | None:
        return self.decode_tokens / self.decode_time_s if self.decode_time_s > 0 else None

    @property
    def decode_steps(self) -> int:
        return sum(1 for s in self.samples if s.num_prefill == 0 and s.num_decode)

    @property
    def allocator_fragmentation_bytes(self) -> int | None:
        gaps = [s.reserved_bytes - s.allocated_bytes for s in self.samples if s.reserved_bytes is not None]
        return max(gaps) if gaps else None

    def summary(self) -> dict:
        return {
            "mode": self.mode, "num_blocks": self.num_blocks, "kv_pool_bytes": self.kv_pool_bytes,
            "steps": len(self.samples), "requests": self.requests_added, "sequences_finished": self.sequences_finished,
            "output_tokens": self.output_tokens, "max_concurrent_users": self.max_concurrent_users,
            "peak_blocks_in_use": self.peak_blocks_in_use, "memory_utilization": self.memory_utilization,
            "internal_fragmentation": self.internal_fragmentation, "preemptions": self.preemptions,
            "decode_tokens_per_s": self.decode_tokens_per_s, "total_time_s": self.total_time_s,
            "blocks_leaked": self.blocks_leaked, "interrupted": self.interrupted, "out_of_memory": self.out_of_memory,
        }


def replay(engine: LLMEngine, items: list, memory: DeviceMemory, *, vocab_size: int, mode: str = "paged",
           on_progress=None) -> RunMeasurement:
    """Run `items` (WorkItems, arrival order) to completion; Ctrl-C stops early with what was measured."""
    cfg = engine.config
    run = RunMeasurement(mode, cfg.num_blocks, cfg.block_size, engine.pool.nbytes)
    pending = deque(sorted(items, key=lambda it: it.arrival_time))
    start = time.perf_counter()
    try:
        while pending or engine.has_unfinished_requests():
            now = time.perf_counter() - start
            while pending and pending[0].arrival_time <= now:
                _add(engine, pending.popleft(), vocab_size, run)
            if not engine.has_unfinished_requests():
                time.sleep(max(0.0, pending[0].arrival_time - now))
                continue
            t0 = time.perf_counter()
            out = engine.step()
            duration = time.perf_counter() - t0
            if not out.num_tokens:  # even alone the head request cannot run (the simulator's rule)
                stuck = out.preempted[-1] if out.preempted else engine.scheduler.waiting[0]
                raise FindingError(f"{mode} run: a request of {stuck.num_tokens:,} tokens does not fit the KV pool "
                                   f"of {cfg.num_blocks:,} blocks even alone")
            run.preemptions += len(out.preempted)
            run.sequences_finished += len(out.finished)
            run.output_tokens += sum(r.num_output_tokens for r in out.finished)
            if out.num_prefill == 0 and out.num_decode:
                run.decode_tokens += len(out.sampled)
                run.decode_time_s += duration
                run.decode_context_tokens += out.context_tokens
            mem = memory.sample()
            run.samples.append(StepSample(
                len(run.samples), t0 - start, duration, out.num_tokens, out.num_decode, out.num_prefill,
                out.blocks_in_use, out.live_slots, sum(r.num_computed_tokens for r in engine.scheduler.running),
                out.num_running, engine.scheduler.num_waiting, run.preemptions, mem.allocated_bytes,
                mem.reserved_bytes, mem.nvml_used_bytes))
            if on_progress is not None:
                on_progress(len(out.sampled))
    except KeyboardInterrupt:
        run.interrupted = True
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        last = run.samples[-1] if run.samples else None
        where = (f"step {len(run.samples)} (after a step with {last.running} sequences running, "
                 f"{last.blocks_in_use:,} blocks in use, {last.num_tokens:,} tokens)") if last else "the first step"
        run.out_of_memory = f"{where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    run.total_time_s = time.perf_counter() - start
    if not run.interrupted and not run.out_of_memory:
        run.blocks_leaked = cfg.num_blocks - engine.num_free_blocks
    return run


def _add(engine: LLMEngine, item, vocab_size: int, run: RunMeasurement) -> None:
    limit = engine.config.max_model_len
    prompt = vocab_ids(item.prompt_ids(None if limit is None else limit + 1), vocab_size)  # never build a huge one
    sampling = GREEDY if item.num_samples == 1 else SamplingParams(temperature=1.0, seed=item.index * _MAX_SAMPLES)
    try:
        engine.add_request(prompt, item.output_len, sampling, request_id=str(item.index), n=item.num_samples,
                           arrival_time=item.arrival_time, prefix_group=item.label)
    except InputError as exc:
        raise FindingError(f"{run.mode} run: request {item.index}: {exc}") from None
    run.requests_added += 1
