"""The model runner: flattens one scheduled step into tensors and runs the model once.

A step is packed into one row `[1, T]` (no padding): single-token chunks (decodes) first, then
each multi-token prefill chunk. Host lists become device tensors in one copy each:

    input_ids, positions         [T]       tokens of every chunk at their absolute positions
    slot_mapping[g]              [T]       block_tables[g][pos // bs] * bs + pos % bs, per page group g
    decode block_tables[g]       [D, M]    int32, -1 padded;  decode_seq_lens [D] = position + 1
    prefill block_tables[g]      [P, M]    one row per prefill chunk
    logits_rows                  [K]       the last row of every chunk that reaches its request's end

Only those K rows go through the LM head (`logits_to_keep`).
"""

from dataclasses import dataclass

import torch

from ..errors import UnsupportedModelError
from .attention import PrefillChunk, StepMetadata
from .kv_pool import KVPool


@dataclass
class PreparedStep:
    input_ids: torch.Tensor  # [1, T]
    positions: torch.Tensor  # [1, T]
    meta: StepMetadata
    logits_rows: torch.Tensor  # [K]
    sample_requests: list  # the Request behind each logits row
    num_tokens: int


class ModelRunner:
    def __init__(self, model: torch.nn.Module, pool: KVPool, kv_manager):
        self.model, self.pool, self.kv_manager = model, pool, kv_manager
        self.device = pool.device

    def prepare(self, scheduled: list) -> PreparedStep:
        """`scheduled`: the step's `kvplan.paging.ScheduledRequest` items."""
        decodes = [s for s in scheduled if s.num_new_tokens == 1]
        prefills = [s for s in scheduled if s.num_new_tokens > 1]
        bs, groups = self.pool.block_size, self.pool.num_groups
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[list[int]] = [[] for _ in range(groups)]
        decode_tables: list[list[list[int]]] = [[] for _ in range(groups)]
        prefill_tables: list[list[list[int]]] = [[] for _ in range(groups)]
        seq_lens: list[int] = []
        chunks: list[PrefillChunk] = []
        logits_rows: list[int] = []
        sample_requests = []
        for item in decodes + prefills:
            req, start, n = item.request, item.start_position, item.num_new_tokens
            end = start + n
            offset = len(input_ids)
            input_ids.extend(req.token_ids(start, end))
            positions.extend(range(start, end))
            tables = self.kv_manager.block_tables(req)
            for g, table in enumerate(tables):
                slots[g].extend(_slot(table, p, bs) for p in range(start, end))
                (decode_tables if n == 1 else prefill_tables)[g].append(table)
            if n == 1:
                seq_lens.append(end)
            else:
                chunks.append(PrefillChunk(offset, n, start))
            if item.needs_logits:
                logits_rows.append(offset + n - 1)
                sample_requests.append(req)
        meta = StepMetadata(
            pool=self.pool,
            slot_mapping=[self._tensor(s, torch.long) for s in slots],
            num_decode=len(decodes),
            decode_block_tables=[self._table(t) for t in decode_tables],
            decode_seq_lens=self._tensor(seq_lens, torch.int32),
            prefills=chunks,
            prefill_block_tables=[self._table(t) for t in prefill_tables],
        )
        return PreparedStep(self._tensor(input_ids, torch.long)[None], self._tensor(positions, torch.long)[None], meta,
                            self._tensor(logits_rows, torch.long), sample_requests, len(input_ids))

    @torch.inference_mode()
    def execute(self, step: PreparedStep) -> torch.Tensor:
        """Logits `[K, vocab]` for the rows that sample (no host sync here)."""
        out = self.model(input_ids=step.input_ids, position_ids=step.positions, use_cache=False,
                         logits_to_keep=step.logits_rows, kvplan_meta=step.meta)
        self.check_routing(step.meta)
        return out.logits[0]

    @torch.inference_mode()
    def warm_up_kernels(self) -> int:
        """Compile every Triton variant a run can launch before anything is timed; returns the forwards run.

        One single-token decode forward per split count the decode kernel can pick (NUM_SPLITS is a
        compile-time constant), through the model itself, so every layer's features (window, softcap,
        sinks, dtype) compile as the run will use them. The token is stored to slot -1 (skipped) and
        reads block 0's zeros: the pool and the allocator are untouched. Nothing to do on the torch path.
        """
        from .. import kernels

        if kernels.kernel_backend(self.device) == "torch":
            return 0
        from ..kernels.triton_decode import SPLIT_BUCKETS

        groups = self.pool.num_groups
        for splits in SPLIT_BUCKETS:
            meta = StepMetadata(
                pool=self.pool, slot_mapping=[self._tensor([-1], torch.long) for _ in range(groups)], num_decode=1,
                decode_block_tables=[self._tensor([[0]], torch.int32) for _ in range(groups)],
                decode_seq_lens=self._tensor([1], torch.int32), prefills=[], prefill_block_tables=[],
                num_splits=splits)
            self.model(input_ids=self._tensor([[0]], torch.long), position_ids=self._tensor([[0]], torch.long),
                       use_cache=False, logits_to_keep=self._tensor([0], torch.long), kvplan_meta=meta)
            self.check_routing(meta)
        return len(SPLIT_BUCKETS)

    def check_routing(self, meta: StepMetadata) -> None:
        """Every step: each KV layer attended through the paged function (a set size, O(1)).

        Checked per step, not once: anything that rebuilds a model from this one's config object
        with another attn_implementation reroutes its layers mid-run, and their output is garbage.
        """
        if len(meta.layers_seen) != len(self.pool.layers):  # the function refuses layers outside the pool
            missing = sorted(set(self.pool.layers) - meta.layers_seen)
            raise UnsupportedModelError(
                f"{type(self.model).__name__} did not route attention of layers {missing} through the paged "
                f"attention function (attn_implementation is {getattr(self.model.config, '_attn_implementation', '?')!r}); "
                "its outputs and KV would be wrong")

    def _tensor(self, values: list, dtype: torch.dtype) -> torch.Tensor:
        return to_device(values, dtype, self.device)

    def _table(self, rows: list[list[int]]) -> torch.Tensor:
        width = max((len(r) for r in rows), default=0) or 1
        return self._tensor([r + [-1] * (width - len(r)) for r in rows] or [[-1]], torch.int32)[:len(rows)]


def _slot(table: list[int], position: int, block_size: int) -> int:
    index = position // block_size
    block = table[index] if index < len(table) else -1
    if block < 0:  # the allocator must cover every token it schedules; a silent skip would read garbage
        raise RuntimeError(f"no KV block for position {position} (block table entry {index} of {len(table)})")
    return block * block_size + position % block_size


def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Host list -> device tensor through pinned memory, without a sync."""
    host = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host


@torch.inference_mode()
def warmup_forward(model: torch.nn.Module, device: torch.device, num_tokens: int, num_seqs: int,
                   vocab_size: int) -> torch.Tensor:
    """A dummy prefill of `num_tokens` tokens in `num_seqs` sequences, before the pool exists.

    Its peak is the activation memory the KV budget must leave free (vLLM's profile run):
    attention runs over each chunk's own K/V and nothing is stored. Returns the logits of
    every sequence's last row, so the caller can run the sampler on them too.
    """
    num_seqs = max(1, min(num_seqs, num_tokens))
    lengths = [num_tokens // num_seqs + (i < num_tokens % num_seqs) for i in range(num_seqs)]
    chunks, rows, offset = [], [], 0
    for n in lengths:
        chunks.append(PrefillChunk(offset, n, 0))
        offset += n
        rows.append(offset - 1)
    positions = [p for n in lengths for p in range(n)]
    meta = StepMetadata(pool=None, slot_mapping=[], num_decode=0, decode_block_tables=[],
                        decode_seq_lens=to_device([], torch.int32, device), prefills=chunks, prefill_block_tables=[])
    input_ids = torch.randint(0, vocab_size, (1, num_tokens), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=input_ids.to(device), position_ids=to_device(positions, torch.long, device)[None],
                use_cache=False, logits_to_keep=to_device(rows, torch.long, device), kvplan_meta=meta)
    return out.logits[0]
