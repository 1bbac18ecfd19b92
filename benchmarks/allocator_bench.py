"""Benchmark: kvplan's KVCacheManager against nano-vllm's BlockManager algorithm, paired, in one process.

    .venv/bin/python benchmarks/allocator_bench.py            # prints the figures
    .venv/bin/python benchmarks/allocator_bench.py --write    # and writes docs/benchmarks/allocator.md

Workload (issue 17): 2,000 requests of 1,000 prompt + 500 decode tokens, block size 16, 64 requests
live at once (a finished request is freed and the next one admitted), decoded round-robin. A
request's life: admit (prefix-cache lookup over its full prompt blocks, allocate, hash the full
blocks), then per decode token one allocation call (kvplan: `allocate_slots(req, 1)`, which registers the
block the token fills, as vLLM's does; nano-vllm: `can_append` then `may_append`, which hashes a
block once it is full),
then free. Prompts are distinct, so nothing hits: every full block is hashed and registered.

Block operations = blocks taken from the free list + full blocks hashed into the prefix cache +
blocks freed; both allocators do the same number (checked). Each side runs --repeat times,
alternating, and the best CPU time (process time) of each is reported, so the ratio compares the
two under the same load.

`NanoBlockManager` below re-implements the algorithm of nano-vllm's `engine/block_manager.py`
(free ids in a deque, used ids in a set, chained xxh64 over the parent hash and the block's token
ids as int64, token ids compared on a hit, a block hashed when a decode fills it): written here
after reading it, not copied. It needs the `xxhash` package (`pip install -e .[bench]`).
"""

import argparse
import os
import sys
import time
from collections import deque
from pathlib import Path

from machine import describe_machine  # benchmarks/machine.py, beside this script

ROOT = Path(__file__).resolve().parents[1]


# ---- nano-vllm's algorithm ----------------------------------------------------------------------

class NanoBlock:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0
        self.hash = -1
        self.token_ids: list[int] = []


class NanoSequence:
    """The parts of nano-vllm's Sequence its block manager reads."""

    def __init__(self, token_ids: list[int], block_size: int):
        self.token_ids = list(token_ids)
        self.num_tokens = len(token_ids)
        self.block_size = block_size
        self.block_table: list[int] = []
        self.num_cached_tokens = 0

    def __len__(self) -> int:
        return self.num_tokens

    @property
    def num_blocks(self) -> int:
        return (self.num_tokens + self.block_size - 1) // self.block_size

    def block(self, i: int) -> list[int]:
        return self.token_ids[i * self.block_size:(i + 1) * self.block_size]

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        self.num_tokens += 1


class NanoBlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        import numpy as np
        import xxhash

        self._np, self._xxh64 = np, xxhash.xxh64
        self.block_size = block_size
        self.blocks = [NanoBlock(i) for i in range(num_blocks)]
        self.hash_to_block_id: dict[int, int] = {}
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        self.used_block_ids: set[int] = set()

    def compute_hash(self, token_ids: list[int], prefix: int = -1) -> int:
        h = self._xxh64()
        if prefix != -1:
            h.update(prefix.to_bytes(8, "little"))
        h.update(self._np.array(token_ids).tobytes())
        return h.intdigest()

    def _take(self, block_id: int) -> NanoBlock:
        block = self.blocks[block_id]
        assert block.ref_count == 0
        block.ref_count, block.hash, block.token_ids = 1, -1, []
        self.free_block_ids.remove(block_id)
        self.used_block_ids.add(block_id)
        return block

    def _release(self, block_id: int) -> None:
        assert self.blocks[block_id].ref_count == 0
        self.used_block_ids.remove(block_id)
        self.free_block_ids.append(block_id)

    def can_allocate(self, seq: NanoSequence) -> bool:
        return len(self.free_block_ids) >= seq.num_blocks

    def allocate(self, seq: NanoSequence) -> None:
        assert not seq.block_table
        h, miss = -1, False
        for i in range(seq.num_blocks):
            token_ids = seq.block(i)
            h = self.compute_hash(token_ids, h) if len(token_ids) == self.block_size else -1
            block_id = self.hash_to_block_id.get(h, -1)
            if block_id == -1 or self.blocks[block_id].token_ids != token_ids:
                miss = True
            if miss:
                block = self._take(self.free_block_ids[0])
            else:
                seq.num_cached_tokens += self.block_size
                if block_id in self.used_block_ids:
                    block = self.blocks[block_id]
                    block.ref_count += 1
                else:
                    block = self._take(block_id)
            if h != -1:
                block.hash, block.token_ids = h, token_ids
                self.hash_to_block_id[h] = block.block_id
            seq.block_table.append(block.block_id)

    def deallocate(self, seq: NanoSequence) -> None:
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._release(block_id)
        seq.num_cached_tokens = 0
        seq.block_table.clear()

    def can_append(self, seq: NanoSequence) -> bool:
        return len(self.free_block_ids) >= (len(seq) % self.block_size == 1)

    def may_append(self, seq: NanoSequence) -> None:
        table = seq.block_table
        last = self.blocks[table[-1]]
        if len(seq) % self.block_size == 1:
            assert last.hash != -1
            block = self._take(self.free_block_ids[0])
            table.append(block.block_id)
        elif len(seq) % self.block_size == 0:
            assert last.hash == -1
            token_ids = seq.block(seq.num_blocks - 1)
            prefix = self.blocks[table[-2]].hash if len(table) > 1 else -1
            h = self.compute_hash(token_ids, prefix)
            last.hash, last.token_ids = h, token_ids
            self.hash_to_block_id[h] = last.block_id
        else:
            assert last.hash == -1


# ---- the workload, once per allocator -------------------------------------------------------------

def prompt_of(i: int, prompt_tokens: int) -> list[int]:
    return list(range(i * 10_000, i * 10_000 + prompt_tokens))  # distinct prompts: no prefix hits


def run_nano(args) -> dict:
    bm = NanoBlockManager(args.num_blocks, args.block_size)
    ops = calls = 0

    def admit(i):
        nonlocal calls
        seq = NanoSequence(prompt_of(i, args.prompt), args.block_size)
        assert bm.can_allocate(seq)
        bm.allocate(seq)
        calls += 1
        return seq

    def finish(seq):
        nonlocal ops
        ops += 2 * len(seq.block_table) + seq.num_tokens // args.block_size  # taken + freed + full blocks hashed
        bm.deallocate(seq)

    def decode_round(live, token):
        can_append, may_append = bm.can_append, bm.may_append
        for seq in live:
            seq.append_token(token)
            assert can_append(seq)
            may_append(seq)

    wall, cpu = drive(args, admit, decode_round, finish)
    assert len(bm.free_block_ids) == args.num_blocks
    assert len(bm.hash_to_block_id) == args.requests * ((args.prompt + args.decode) // args.block_size)  # all hashed
    return {"ops": ops, "calls": calls + args.requests * args.decode, "wall": wall, "cpu": cpu}


def run_kvplan(args) -> dict:
    from kvplan.model import FullAttention, ModelSpec
    from kvplan.model.grouping import page_layout
    from kvplan.paging import KVCacheManager, Request

    layout = page_layout(ModelSpec("bench", "bench", (FullAttention(tuple(range(32)), 8, 128, 128),), 32))
    kv = KVCacheManager(layout, args.num_blocks, args.block_size)
    ops = calls = 0

    def admit(i):
        nonlocal calls
        req = Request(str(i), prompt_of(i, args.prompt), args.decode + 1)
        assert kv.allocate_slots(req, args.prompt)  # registers the full prompt blocks
        req.num_computed_tokens = args.prompt
        calls += 1
        return req

    def finish(req):
        nonlocal ops
        ops += 2 * kv.num_blocks_held(req) + req.num_computed_tokens // args.block_size  # as nano's finish
        kv.free(req)

    def decode_round(live, token):
        allocate_slots = kv.allocate_slots
        for req in live:
            req.output_token_ids.append(token)
            assert allocate_slots(req, 1)  # and registers the block it fills, if it fills one
            req.num_computed_tokens += 1

    wall, cpu = drive(args, admit, decode_round, finish)
    kv.check_integrity()
    assert kv.pool.num_free_blocks == args.num_blocks
    hashed = len(kv.pool.cached_blocks) + kv.pool.num_evictions  # every key is distinct: cached now, or evicted
    assert hashed == args.requests * ((args.prompt + args.decode) // args.block_size)
    return {"ops": ops, "calls": calls + args.requests * args.decode, "wall": wall, "cpu": cpu}


def drive(args, admit, decode_round, finish) -> tuple[float, float]:
    """Keep args.live requests decoding round-robin; each decodes args.decode tokens, then makes room."""
    wall, cpu = time.perf_counter(), time.process_time()
    admitted = 0
    live, left = [], []
    while admitted < args.requests or live:
        while len(live) < args.live and admitted < args.requests:
            live.append(admit(admitted))
            left.append(args.decode)
            admitted += 1
        steps = min(left)  # every live request decodes this many tokens before the next one finishes
        for step in range(steps):
            decode_round(live, step)
        left = [n - steps for n in left]
        for handle in [h for h, n in zip(live, left) if n == 0]:
            finish(handle)
        live = [h for h, n in zip(live, left) if n]
        left = [n for n in left if n]
    return time.perf_counter() - wall, time.process_time() - cpu


def best(runs: list[dict]) -> dict:
    run = dict(min(runs, key=lambda r: r["cpu"]))
    run["cpus"] = [r["cpu"] for r in runs]
    run["ops_per_s"] = run["ops"] / run["cpu"]
    run["calls_per_s"] = run["calls"] / run["cpu"]
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--prompt", type=int, default=1_000, help="prompt tokens per request")
    parser.add_argument("--decode", type=int, default=500, help="decode tokens per request")
    parser.add_argument("--live", type=int, default=64, help="requests live at once")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--num-blocks", type=int, default=8_192)
    parser.add_argument("--repeat", type=int, default=3, help="runs per allocator, alternating; the best CPU time counts")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks" / "allocator.md")
    parser.add_argument("--write", action="store_true", help="write the markdown report to --output")
    args = parser.parse_args(argv)
    try:
        import xxhash  # noqa: F401  (nano-vllm's hash)
    except ImportError:
        print("allocator_bench: error: nano-vllm's side needs the xxhash package (pip install -e .[bench])", file=sys.stderr)
        return 2

    load = os.getloadavg()[0]
    nano_runs, kv_runs = [], []
    for _ in range(args.repeat):
        nano_runs.append(run_nano(args))
        kv_runs.append(run_kvplan(args))
    nano, kv = best(nano_runs), best(kv_runs)
    assert nano["ops"] == kv["ops"] and nano["calls"] == kv["calls"], (nano, kv)
    ratio = kv["ops_per_s"] / nano["ops_per_s"]
    flags = "".join(f" --{name.replace('_', '-')} {getattr(args, name)}" for name, default in (
        ("requests", 2_000), ("prompt", 1_000), ("decode", 500), ("live", 64), ("block_size", 16),
        ("num_blocks", 8_192), ("repeat", 3)) if getattr(args, name) != default)
    lines = [
        "# Allocator benchmark: kvplan's KVCacheManager vs nano-vllm's BlockManager algorithm",
        "",
        f"Command: `.venv/bin/python benchmarks/allocator_bench.py{flags} --write`",
        "",
        f"Machine: {describe_machine()}; load average {load:.2f} at start. Both allocators ran in this one "
        f"process, {args.repeat} times each, alternating; the best CPU time (process time) of each is reported.",
        "",
        f"Workload: {args.requests:,} requests of {args.prompt:,} prompt + {args.decode:,} decode tokens, block size "
        f"{args.block_size}, {args.live} live at once, {args.num_blocks:,} blocks; prefix hashing of every full "
        "block (distinct prompts, so no hits); one allocation call per decode token. Block operations = blocks "
        "taken from the free list + full blocks hashed + blocks freed (equal on both sides: checked).",
        "",
        "| allocator | block operations | calls | CPU s (best) | all runs, CPU s | block ops / s | calls / s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in (("nano-vllm BlockManager (re-implemented, xxh64)", nano), ("kvplan KVCacheManager", kv)):
        lines.append(f"| {name} | {run['ops']:,} | {run['calls']:,} | {run['cpu']:.3f} | "
                     f"{', '.join(f'{c:.3f}' for c in run['cpus'])} | {run['ops_per_s']:,.0f} | "
                     f"{run['calls_per_s']:,.0f} |")
    lines += [
        "", f"**kvplan / nano-vllm: {ratio:.2f}x** block operations per CPU second.", "",
        "Before issue 17's changes (commit 3bb30f2: a blake2b chain per block, `cache_blocks` after every decode "
        "token, the manager's state found through a dict) the same harness measured 0.39x (137,793 vs 351,285 "
        "block operations / s, one run on this machine). Where the time goes now: the per-token path is one "
        "`allocate_slots` call that moves the request's end (a slot in a list; the filled-slot count is derived from "
        "the ends when read); a block costs two tuple hashes to register (kept on the request for later prefix walks) "
        "and a pop from the free list, and a request's admission, registration and free are per-block Python loops on "
        "both sides, which bound the ratio. On this shared machine the ratio moves with the load between runs of "
        "this script.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        sys.path.insert(0, str(ROOT))
        from kvplan.atomic import write_text_atomic

        write_text_atomic(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
