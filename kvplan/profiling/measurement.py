"""The measured side of a profile: load, warm-up, pool, run (and the contiguous rerun) on the device.

Each figure is recorded with how it was obtained (`ProfileResult.record`):

| figure           | CUDA                                            | CPU                                   |
|------------------|-------------------------------------------------|---------------------------------------|
| weights          | allocator delta around the load                 | bytes of the parameters' storages     |
| activation peak  | peak allocated in the warm-up - allocated before | not measured                          |
| non-torch        | its growth since CUDA start-up (driver used -    | not measured                          |
|                  | torch reserved, after the warm-up - at start-up) |                                       |
| KV pool          | bytes of the pool tensors' storages (and, apart, | bytes of the pool tensors' storages   |
|                  | the allocator delta and its overhead over them)  |                                       |
| blocks, budget   | computed from the measured terms (policy formula)| computed (the budget is given)        |
| dynamics         | the engine's allocator during the run           | the same                              |
| total memory     | the most driver used over all phases and steps - | not measured                          |
|                  | the baseline at start-up (the CUDA context)      |                                       |

"Driver used" is DeviceMemory.nvml_used: NVML's figure for this process, else for the whole
device (NVML, then cudaMemGetInfo); each basis names the source its readings came from.

A CUDA OOM in any phase propagates to `run_profile`, which turns it into a finding; `what`
names what was being allocated.
"""

import gc
from dataclasses import asdict, replace

from ..errors import FindingError
from ..plan import Deployment
from ..plan.overhead import Term
from ..plan.policies import get_policy
from ..units import fmt_gib
from .prediction import kv_format, roofline, term_bytes
from .result import ProfileResult

CPU_UNMEASURED = "CPU: no allocator counters or NVML"


def budget_terms(result: ProfileResult, modelled: list[Term], cuda: bool, dep: Deployment) -> list[Term]:
    """The overhead terms the KV budget subtracts: the measured ones on CUDA, and the modelled term
    wherever the device gave no reading (a missing term must never count as 0: the pool would be
    oversized by it)."""
    if not cuda or dep.kv_cache_memory_bytes is not None or dep.overhead_bytes is not None:
        return modelled
    measured = result.measured
    growth, baseline = measured.get("non_torch_bytes"), measured.get("non_torch_baseline_bytes")
    if growth is None or baseline is None:
        non_torch = term_bytes(modelled, "non-torch")
        non_torch_term = Term("non-torch", non_torch, "modelled (no driver reading)")
        result.notes.append(f"no driver memory reading: the KV budget subtracts the modelled non-torch term "
                            f"({_gib(non_torch)}) instead of a measurement")
    else:  # all of it, the CUDA context included: the pool never takes what the context holds
        non_torch_term = Term("non-torch", baseline + growth, "measured: driver used - torch reserved after the "
                                                              "warm-up (CUDA context included)")
    return [Term("activation peak", measured["activation_peak_bytes"], "measured"), non_torch_term,
            *[t for t in modelled if t.name.startswith("CUDA graphs")]]


class DevicePhases:
    """Runs the measured phases in order; `what` names what was being allocated when one fails."""

    def __init__(self, result: ProfileResult, loaded, dep: Deployment, dev, memory, dtype, *, random: bool,
                 seed: int, terms: list[Term], items: list, progress=None):
        self.result, self.loaded, self.dep, self.dev, self.memory = result, loaded, dep, dev, memory
        self.dtype, self.random, self.seed, self.terms, self.items = dtype, random, seed, terms, items
        self.progress = progress
        self.cuda = dev.type == "cuda"
        self.what = "the estimate"
        self.model = self.engine = self.config = None
        self.nvml_peak_bytes: int | None = None

    def _nvml(self, sample) -> None:
        if sample.nvml_used_bytes is not None:
            self.nvml_peak_bytes = max(self.nvml_peak_bytes or 0, sample.nvml_used_bytes)

    def load(self) -> None:
        from ..runtime.model_loader import load_engine_model

        result, memory = self.result, self.memory
        result.phase, self.what = "load", f"the weights ({_gib(result.predicted['weights_bytes'])} predicted)"
        if self.cuda:  # the CUDA context exists from here on: what the driver sees beyond torch is the baseline
            import torch

            torch.zeros(1, device=self.dev)
            start = memory.sample()
            self._nvml(start)
            if start.nvml_used_bytes is not None:
                result.record("non_torch_baseline_bytes", start.nvml_used_bytes - start.reserved_bytes, "measured",
                              f"driver used ({memory.used_basis()}) - torch reserved right after CUDA start-up: "
                              "the CUDA context (no budget term covers it)")
        memory.reset_peak()
        before = memory.sample().allocated_bytes
        self.model = load_engine_model(self.loaded, device=self.dev, dtype=self.dtype, random_weights=self.random,
                                       seed=self.seed)
        result.record("weights_tensor_bytes", self.model.weights_bytes, "measured",
                      "bytes of the storages behind parameters and buffers")
        if self.cuda:
            after = memory.sample()
            self._nvml(after)
            result.record("weights_bytes", after.allocated_bytes - before, "measured",
                          "torch.cuda.memory_allocated delta around the load")
        else:
            result.record("weights_bytes", result.measured["weights_tensor_bytes"], "measured",
                          "bytes of the storages behind parameters and buffers")

    def warm_up(self) -> None:
        import torch

        from ..runtime.runner import warmup_forward
        from ..runtime.sampler import GREEDY, Sampler

        result, memory, dep = self.result, self.memory, self.dep
        result.phase = "warm-up"
        self.what = (f"the warm-up forward of {dep.max_num_batched_tokens:,} tokens "
                     f"({_gib(result.predicted['activation_peak_bytes'])} activations predicted)")
        memory.synchronize()
        memory.reset_peak()
        base = memory.sample().allocated_bytes
        logits = warmup_forward(self.model.model, self.dev, dep.max_num_batched_tokens, dep.max_num_seqs,
                                self.model.hf_config.vocab_size)
        Sampler(self.dev).sample(logits, [str(i) for i in range(logits.shape[0])], [GREEDY] * logits.shape[0])
        memory.synchronize()
        after = memory.sample()
        self._nvml(after)
        if self.cuda:
            result.record("activation_peak_bytes", after.peak_allocated_bytes - base, "measured",
                          "peak allocated during the warm-up forward and sampling - allocated before")
            result.record("peak_allocated_bytes", after.peak_allocated_bytes, "measured",
                          "torch.cuda.max_memory_allocated")
            baseline = result.measured.get("non_torch_baseline_bytes")
            if after.nvml_used_bytes is not None and baseline is not None:  # the growth, as the policies model it
                result.record("non_torch_bytes", after.nvml_used_bytes - after.reserved_bytes - baseline, "computed",
                              f"driver used ({memory.used_basis()}) - torch reserved after the warm-up, less the "
                              "same right after CUDA start-up (the context): the growth since")
            else:
                result.unmeasured("non_torch_bytes", _no_reading(memory))
        else:
            for key in ("activation_peak_bytes", "non_torch_bytes", "peak_allocated_bytes"):
                result.unmeasured(key, CPU_UNMEASURED)
        del logits
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def pool(self) -> None:
        from ..runtime.engine import EngineConfig, LLMEngine
        from ..runtime.memory import storage_bytes

        result, memory, dep, spec = self.result, self.memory, self.dep, self.loaded.spec
        result.phase = "pool"
        policy = get_policy(dep.engine).bind(spec)
        terms = budget_terms(result, self.terms, self.cuda, dep)
        budget = policy.kv_budget(dep.gpu.memory_bytes if dep.gpu else 0, result.measured["weights_bytes"], terms, dep)
        pool = policy.pool(spec, budget, kv_format(dep, spec), dep)
        given = dep.kv_cache_memory_bytes is not None
        result.record("kv_budget_bytes", budget, "computed",
                      "--kv-cache-memory" if given else
                      f"the {dep.engine} policy's formula over the terms "
                      f"({', '.join(f'{t.name}: {t.basis}' for t in terms)})")
        if pool.num_blocks < 1:
            raise FindingError(f"no KV block fits: the measured budget is {_gib(budget)} after weights and overhead "
                               f"(one block is {_gib(pool.page_bytes)})")
        result.record("num_blocks", pool.num_blocks, "computed", "KV budget // page bytes")
        result.record("kv_pool_layout_bytes", pool.num_blocks * pool.page_bytes, "computed",
                      "blocks x page bytes (the layout's formula)")
        self.what = f"the KV pool of {pool.num_blocks:,} blocks ({_gib(pool.usable_bytes)})"
        before = memory.sample().allocated_bytes
        self.config = EngineConfig(num_blocks=pool.num_blocks, block_size=pool.block_size, kv_dtype=dep.kv_dtype,
                                   max_model_len=result.estimate["max_model_len"], max_num_seqs=dep.max_num_seqs,
                                   max_num_batched_tokens=dep.max_num_batched_tokens)
        self.engine = LLMEngine(self.model, spec, self.config)
        tensors = self.engine.pool.k_caches + self.engine.pool.v_caches
        result.record("kv_pool_bytes", storage_bytes(tensors), "measured",
                      f"bytes of the storages allocated for the pool's {len(tensors)} tensors")
        if self.cuda:  # what the caching allocator handed out for it: its rounding shows here, not in the pool
            after = memory.sample()
            self._nvml(after)
            result.record("kv_pool_allocator_bytes", after.allocated_bytes - before, "measured",
                          "torch.cuda.memory_allocated delta around the engine's construction (pool and buffers)")
            result.record("kv_pool_allocator_overhead_bytes", after.allocated_bytes - before - result.measured[
                "kv_pool_bytes"], "computed", "allocator delta - pool storage bytes: the caching allocator's "
                                              "rounding of each pool tensor and the engine's own buffers")
        self.what = "the kernel warm-up"
        self.engine.warm_up()  # compile every decode/store kernel variant before the timed run

    def run(self) -> None:
        from ..runtime.replay import replay

        result, memory, measured = self.result, self.memory, self.result.measured
        result.phase, self.what = "run", "the workload"
        memory.reset_peak()
        before = memory.sample().allocated_bytes
        run = replay(self.engine, self.items, memory, vocab_size=self.model.hf_config.vocab_size,
                     on_progress=_bind(self.progress, "paged"))
        result.run = run.summary()
        result.samples = [asdict(s) for s in run.samples]
        how = f"the engine's allocator and scheduler over the run ({len(run.samples):,} steps)"
        for key in ("max_concurrent_users", "memory_utilization", "internal_fragmentation", "preemptions"):
            result.record(key, getattr(run, key), "measured", how)
        result.record("blocks_leaked", run.blocks_leaked, "measured", "blocks not back in the free list after the run")
        if run.decode_tokens_per_s is not None:
            result.record("decode_tokens_per_s", run.decode_tokens_per_s, "measured",
                          "tokens sampled in decode-only steps / their wall time")
        roofline(result, run, self.dep)
        for sample in run.samples:
            self._nvml(sample)
        if self.cuda:
            import torch

            peak = torch.cuda.max_memory_allocated(self.dev)
            result.record("run_activation_peak_bytes", peak - before, "measured",
                          "peak allocated during the run - allocated before (above weights and pool)")
            result.record("peak_allocated_bytes", max(peak, measured.get("peak_allocated_bytes") or 0), "measured",
                          "torch.cuda.max_memory_allocated over warm-up and run")
            result.record("allocator_fragmentation_bytes", run.allocator_fragmentation_bytes, "measured",
                          "max over steps of torch reserved - allocated")
        else:
            result.unmeasured("allocator_fragmentation_bytes", CPU_UNMEASURED)
        if run.interrupted:
            raise KeyboardInterrupt
        if run.out_of_memory:
            raise FindingError(f"out of memory during the run at {run.out_of_memory}")
        if run.blocks_leaked:
            result.notes.append(f"{run.blocks_leaked} blocks were not returned to the pool after the run")

    def contiguous(self) -> None:
        from ..paging.contiguous import reservation_blocks
        from ..runtime.engine import LLMEngine
        from ..runtime.replay import replay
        from ..model.grouping import page_layout

        result, spec = self.result, self.loaded.spec
        result.phase = "contiguous"
        self.engine = None
        self._free()
        layout = page_layout(spec, kv_format(self.dep, spec))
        need = reservation_blocks(layout, result.estimate["max_model_len"], result.estimate["block_size"],
                                  self.dep.max_num_batched_tokens)
        if need > self.config.num_blocks:
            result.contiguous = {"mode": "contiguous", "note": f"one max_model_len reservation needs {need:,} blocks; "
                                                               f"the pool has {self.config.num_blocks:,}: nothing runs"}
            return
        self.what = "the contiguous run"
        self.engine = LLMEngine(self.model, spec, replace(self.config, contiguous=True))
        run = replay(self.engine, self.items, self.memory, vocab_size=self.model.hf_config.vocab_size,
                     mode="contiguous", on_progress=_bind(self.progress, "contiguous"))
        for sample in run.samples:  # the total's peak is over every phase, this one included
            self._nvml(sample)
        result.contiguous = run.summary()
        result.contiguous["predicted_max_concurrent_users"] = result.predicted_static["contiguous_max_concurrent_users"]
        result.contiguous["simulated_max_concurrent_users"] = result.predicted_simulated.get(
            "contiguous_max_concurrent_users")
        if run.interrupted:
            raise KeyboardInterrupt
        if run.out_of_memory:
            raise FindingError(f"out of memory during the contiguous run at {run.out_of_memory}")

    def finish(self) -> None:
        """Release the engine and the model, and record the peaks (an OOM's included)."""
        self.engine = self.model = None
        self.record_peaks()
        self._free()

    def record_peaks(self) -> None:
        """On CUDA: the peak allocated, the most driver used and the total memory, so far."""
        result = self.result
        if not self.cuda:
            result.unmeasured("total_memory_bytes", CPU_UNMEASURED)
            return
        import torch

        peak = torch.cuda.max_memory_allocated(self.dev)  # since the last reset: what an OOM reached
        result.record("peak_allocated_bytes", max(peak, result.measured.get("peak_allocated_bytes") or 0),
                      "measured", "torch.cuda.max_memory_allocated over every phase")
        baseline = result.measured.get("non_torch_baseline_bytes")
        if self.nvml_peak_bytes is not None:
            result.record("driver_used_peak_bytes", self.nvml_peak_bytes, "measured",
                          f"driver used ({self.memory.used_basis()}): the most over every phase and step")
        if self.nvml_peak_bytes is not None and baseline is not None:
            result.record("total_memory_bytes", self.nvml_peak_bytes - baseline, "computed",
                          f"the most driver used ({self.memory.used_basis()}) over every phase and step - the "
                          "baseline right after CUDA start-up: the CUDA context is left out on both sides")
        else:
            result.unmeasured("total_memory_bytes", _no_reading(self.memory))

    def _free(self) -> None:
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()


def _bind(progress, phase: str):
    return None if progress is None else (lambda tokens: progress(phase, tokens))


def _no_reading(memory) -> str:
    return f"no driver memory reading ({memory.unavailable or 'none right after CUDA start-up'})"


def _gib(num_bytes) -> str:
    return fmt_gib(num_bytes) if num_bytes is not None else "?"
