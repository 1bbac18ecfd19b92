"""Achieved memory bandwidth of the Triton paged-decode kernel on a CUDA GPU.

    python benchmarks/decode_attention.py [--batch 1 8 64] [--context 1024 4096 16384]
        [--kv-heads 2 8] [--head-dim 128] [--group 4] [--iters 50] [--json out.json]

For every batch x context x KV-heads point, all sequences have the full context
and their blocks are scattered at random over the pool. Bandwidth is the K/V
bytes a decode step must read divided by the median kernel time (CUDA events,
L2 flushed before each timed call, after warm-up). Two references from the same
process: the device copy bandwidth (read + write bytes of a 1 GiB tensor copy),
and torch SDPA over a contiguous `[B, Hkv, L, D]` cache of the same shape
(`enable_gqa=True`; its bandwidth uses the same logical K/V bytes). A bf16
correctness check against the torch reference runs first; its outcome is in the JSON
(`correctness`), which a failed check writes too, without rows, before exiting with 1.
"""

import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

from kvplan.kernels import kernel_backend, paged_decode, paged_decode_reference
from kvplan.kernels.triton_decode import choose_num_splits

L2_FLUSH_BYTES = 256 << 20  # well above any current GPU's L2


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--context", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--kv-heads", type=int, nargs="+", default=[2, 8])
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--group", type=int, default=4, help="query heads per KV head")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args()


def time_ms(fn, iters: int, warmup: int, flush: torch.Tensor) -> float:
    """Median milliseconds of `fn()` over `iters` calls, each on a cold L2."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbs(iters: int, warmup: int, flush: torch.Tensor) -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), iters, warmup, flush)
    return 2 * src.numel() / ms / 1e6


def make_paged(batch, context, kv_heads, head_dim, block_size, dtype, gen):
    """Random paged K/V caches with each sequence's blocks scattered over the pool."""
    blocks_per_seq = -(-context // block_size)
    num_blocks = batch * blocks_per_seq
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache = torch.randn(shape, device="cuda", dtype=dtype, generator=gen)
    v_cache = torch.randn(shape, device="cuda", dtype=dtype, generator=gen)
    order = torch.randperm(num_blocks, device="cuda", generator=gen)
    block_tables = order.view(batch, blocks_per_seq).to(torch.int32)
    seq_lens = torch.full((batch,), context, device="cuda", dtype=torch.int32)
    return k_cache, v_cache, block_tables, seq_lens


def check_bf16(gen) -> dict:
    """The compiled kernel against the fp32 torch reference, plain and with every feature on:
    {"ok", "detail"}."""
    k_cache, v_cache, tables, _ = make_paged(3, 700, 8, 128, 16, torch.bfloat16, gen)
    seq_lens = torch.tensor([1, 33, 700], device="cuda", dtype=torch.int32)
    q = torch.randn(3, 32, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    sinks = torch.randn(32, device="cuda", generator=gen)
    worst = 0.0
    for features in (dict(), dict(window=64, softcap=30.0, sinks=sinks)):
        args = (q, k_cache, v_cache, tables, seq_lens, 128 ** -0.5)
        err = (paged_decode(*args, **features).float() - paged_decode_reference(*args, **features).float()).abs().max()
        if not err <= 2e-2:
            return {"ok": False, "detail": f"bf16 paged decode vs the torch reference failed "
                                           f"({'window, softcap, sinks' if features else 'plain'}): max abs error "
                                           f"{err:.3g} > 2e-2"}
        worst = max(worst, err.item())
    return {"ok": True, "detail": f"bf16 paged decode vs the torch reference, plain and with window, softcap and "
                                  f"sinks: max abs error {worst:.3g} <= 2e-2"}


def bench_point(batch, context, kv_heads, args, dtype, gen, flush, copy_gbs) -> dict:
    q_heads = kv_heads * args.group
    k_cache, v_cache, tables, seq_lens = make_paged(batch, context, kv_heads, args.head_dim, args.block_size,
                                                    dtype, gen)
    q = torch.randn(batch, q_heads, args.head_dim, device="cuda", dtype=dtype, generator=gen)
    scale = args.head_dim ** -0.5
    kv_bytes = 2 * batch * context * kv_heads * args.head_dim * k_cache.element_size()
    paged_ms = time_ms(lambda: paged_decode(q, k_cache, v_cache, tables, seq_lens, scale),
                       args.iters, args.warmup, flush)
    del k_cache, v_cache

    k = torch.randn(batch, kv_heads, context, args.head_dim, device="cuda", dtype=dtype, generator=gen)
    v = torch.randn_like(k)
    q4 = q[:, :, None, :]
    sdpa_ms = time_ms(lambda: F.scaled_dot_product_attention(q4, k, v, scale=scale, enable_gqa=True),
                      args.iters, args.warmup, flush)
    paged_gbs = kv_bytes / paged_ms / 1e6
    return dict(
        batch=batch, context=context, kv_heads=kv_heads, q_heads=q_heads, head_dim=args.head_dim,
        splits=choose_num_splits(batch, kv_heads, tables.shape[1] * args.block_size, q.device),
        kv_mb=kv_bytes / 1e6, paged_us=paged_ms * 1e3, paged_gbs=paged_gbs, pct_of_copy=100 * paged_gbs / copy_gbs,
        sdpa_us=sdpa_ms * 1e3, sdpa_gbs=kv_bytes / sdpa_ms / 1e6, speedup_vs_sdpa=sdpa_ms / paged_ms,
    )


def markdown(rows, copy_gbs) -> str:
    lines = [
        f"Device copy bandwidth (read + write): {copy_gbs:,.0f} GB/s\n",
        "| batch | context | Hkv | Hq | splits | K/V MB | paged µs | paged GB/s | % of copy | SDPA µs | SDPA GB/s"
        " | paged speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['context']} | {r['kv_heads']} | {r['q_heads']} | {r['splits']} | {r['kv_mb']:,.1f}"
            f" | {r['paged_us']:,.1f} | {r['paged_gbs']:,.0f} | {r['pct_of_copy']:.0f}% | {r['sdpa_us']:,.1f}"
            f" | {r['sdpa_gbs']:,.0f} | {r['speedup_vs_sdpa']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit("decode_attention.py needs a CUDA GPU (torch.cuda.is_available() is False).")
    if kernel_backend("cuda") != "triton":
        sys.exit(f"paged_decode would run as {kernel_backend('cuda')!r}; unset TRITON_INTERPRET and install triton.")
    import triton

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    gen = torch.Generator(device="cuda").manual_seed(0)
    device = torch.cuda.get_device_name()
    meta = dict(device=device, torch=torch.__version__, triton=triton.__version__, dtype=args.dtype,
                block_size=args.block_size, iters=args.iters)
    correctness = check_bf16(gen)
    print(correctness["detail"] + "\n")
    if not correctness["ok"]:  # the JSON says so: no bandwidth of a wrong kernel
        write_json(args.json, dict(meta=meta, correctness=correctness, rows=[]))
        sys.exit(1)

    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    meta["copy_gbs"] = copy_gbs = copy_bandwidth_gbs(args.iters, args.warmup, flush)
    meta["points_planned"] = len(args.batch) * len(args.context) * len(args.kv_heads)
    rows = []
    for batch in args.batch:
        for context in args.context:
            for kv_heads in args.kv_heads:
                rows.append(bench_point(batch, context, kv_heads, args, dtype, gen, flush, copy_gbs))
                torch.cuda.empty_cache()
                write_json(args.json, dict(meta=meta, correctness=correctness, rows=rows))  # a timeout keeps these
    print(f"{device}, {args.dtype}, head_dim {args.head_dim}, group {args.group}, block size {args.block_size}\n")
    print(markdown(rows, copy_gbs))


def write_json(path, doc: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
