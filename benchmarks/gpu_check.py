"""Helpers of benchmarks/gpu_check.sh: small model configs, engine-vs-transformers parity, the verdict.

    python benchmarks/gpu_check.py environment             Python, package versions, the kvplan imported, CUDA
    python benchmarks/gpu_check.py configs DIR             tiny config.json files for the dry run
    python benchmarks/gpu_check.py parity --device cuda --json OUT.json
    python benchmarks/gpu_check.py verdict WORKDIR          reads the steps' outputs, prints PASS/FAIL lines

Parity: for a dense (Llama), a sliding-window (Mistral, window 32) and an MoE (Qwen3-MoE) family,
random weights (initializer_range 0.1, so greedy choices are not near-ties), the engine's greedy
tokens against transformers' `generate` (eager attention, same weights) on prompts of 5 to 70
tokens that cross blocks and the window. fp32: every token identical. bf16: on the engine's own
tokens (teacher forcing), the mean |logit error| of the engine against the same model in fp32 is
at most BF16_ERROR_RATIO x that of transformers' own bf16 forward (bf16 rounds at 2^-8 relative,
many times per layer, and an MoE router may pick another expert: transformers' bf16 error is the
yardstick); the greedy token agreement with transformers' bf16 `generate` is reported.
"""

import argparse
import json
import sys
from pathlib import Path

BF16_ERROR_RATIO = 1.5
TOTAL_TOL, TOTAL_GOAL = 0.03, 0.02  # total memory, predicted vs measured (NVML)
BANDWIDTH_BAR, BANDWIDTH_GOAL = 0.70, 0.90  # decode kernel, fraction of measured copy bandwidth

TINY = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, initializer_range=0.1, torch_dtype="float32")
SMALL = dict(TINY, vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             head_dim=16)  # the dry run's CPU stand-in
PARITY_FAMILIES = {
    "llama (dense)": {"model_type": "llama"},
    "mistral (sliding window 32)": {"model_type": "mistral", "sliding_window": 32},
    "qwen3_moe (MoE)": {"model_type": "qwen3_moe", "num_experts": 8, "num_experts_per_tok": 2,
                        "moe_intermediate_size": 64},
}
# Dry-run stand-ins for the full-size profile models: the same families and attention kinds, tiny.
DRY_RUN_CONFIGS = {
    "llama-3.1-8b-tiny": {"model_type": "llama", **{k: v for k, v in TINY.items() if k != "initializer_range"}},
    "gemma-2-9b-tiny": {"model_type": "gemma2", **{k: v for k, v in TINY.items() if k != "initializer_range"},
                        "sliding_window": 32, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                        "query_pre_attn_scalar": 32},
}


def environment() -> None:
    """Versions from the installed metadata (no import of transformers or triton: seconds saved), the
    kvplan this Python imports, and what torch sees of CUDA."""
    import importlib.metadata
    import importlib.util
    import platform

    print("python", sys.version.replace("\n", " "), platform.platform())
    for package in ("torch", "transformers", "triton", "numpy", "nvidia-ml-py", "pytest", "hypothesis", "matplotlib"):
        try:
            print(package, importlib.metadata.version(package))
        except importlib.metadata.PackageNotFoundError:
            print(package, "not installed")
    for module in ("kvplan", "kvplan.kernels", "kvplan.model_specs"):
        spec = importlib.util.find_spec(module)
        print(module, "from", spec.origin if spec else "nowhere: not importable")
    import torch

    print("torch cuda", torch.version.cuda, "available", torch.cuda.is_available(), "threads", torch.get_num_threads())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print("device", props.name, f"{props.total_memory / 2**30:.2f} GiB", f"capability {props.major}.{props.minor}",
              f"{props.multi_processor_count} SMs")


def write_configs(directory: Path) -> None:
    for name, config in DRY_RUN_CONFIGS.items():
        path = directory / name / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=1) + "\n")
        print(path)


def parity(device_name: str, max_tokens: int, small: bool) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM

    from kvplan.model import spec_from_config
    from kvplan.model.loaders import LoadedModel
    from kvplan.runtime import EngineConfig, LLMEngine, load_engine_model

    device = torch.device(device_name)
    base = SMALL if small else TINY
    gen = torch.Generator().manual_seed(7)
    lengths = (5, 40) if small else (5, 17, 40, 70)
    prompts = [torch.randint(3, base["vocab_size"], (n,), generator=gen).tolist() for n in lengths]
    rows = []
    for family, extra in PARITY_FAMILIES.items():
        config = {**base, **extra, "eos_token_id": None}  # the engine ignores EOS; generate must too
        loaded = LoadedModel(spec_from_config(config, name=family, source="gpu_check"), None, config, None)
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            model = load_engine_model(loaded, device=device, dtype=dtype, seed=1)
            engine = LLMEngine(model, loaded.spec, EngineConfig(num_blocks=64, block_size=16, max_num_seqs=8,
                                                                max_num_batched_tokens=64))
            logits: dict[str, list] = {}

            def record(eng, out):
                for i, rid in enumerate(out.logits_request_ids):
                    logits.setdefault(rid, []).append(out.logits[i].float().cpu())

            reqs = [engine.add_request(p, max_tokens) for p in prompts]
            engine.run(on_step=record)
            refs = {}
            for name, ref_dtype in (("same", dtype), ("fp32", torch.float32)):
                ref = AutoModelForCausalLM.from_config(model.hf_config, dtype=ref_dtype, attn_implementation="eager")
                ref.load_state_dict(model.model.state_dict())
                refs[name] = ref.to(device).eval()
            same = total = 0
            engine_err = ref_err = 0.0
            for req, prompt in zip(reqs, prompts):
                got = list(req.output_token_ids)
                tokens = torch.tensor([prompt + got[:-1]], device=device)
                with torch.inference_mode():
                    want = refs["same"].generate(torch.tensor([prompt], device=device), max_new_tokens=max_tokens,
                                                 do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
                    truth = refs["fp32"](tokens).logits[0, len(prompt) - 1:].float().cpu()
                    theirs = refs["same"](tokens).logits[0, len(prompt) - 1:].float().cpu()
                same += next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(got))
                total += len(got)
                engine_err += (torch.stack(logits[req.request_id]) - truth).abs().mean().item() / len(prompts)
                ref_err += (theirs - truth).abs().mean().item() / len(prompts)
            rows.append({"family": family, "dtype": dtype_name, "device": str(device), "tokens": total,
                         "tokens_before_first_divergence": same, "engine_mean_abs_logit_error": engine_err,
                         "transformers_mean_abs_logit_error": ref_err})
            print(f"{family:28} {dtype_name}: {same}/{total} greedy tokens identical before a divergence; "
                  f"mean |logit error| vs fp32: engine {engine_err:.3g}, transformers {ref_err:.3g}", flush=True)
            del engine, model, refs
    return rows


def parity_passes(row: dict) -> bool:
    if row["dtype"] == "fp32":
        return row["tokens_before_first_divergence"] == row["tokens"]
    return row["engine_mean_abs_logit_error"] <= BF16_ERROR_RATIO * row["transformers_mean_abs_logit_error"] + 1e-4


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def verdict(workdir: Path, dry_run: bool) -> list[tuple[str, str, str]]:
    """(status, check, detail) for every check; status PASS, FAIL, GOAL-MISSED (within the bar) or SKIP."""
    out = []

    def add(status, check, detail):
        out.append((status, check, detail))

    steps = _load(workdir / "steps.json") or {}
    for name, step in steps.items():
        if step["status"] == "skipped":
            log = workdir / "logs" / f"{name}.log"
            add("SKIP", f"step {name}", log.read_text().strip() if log.exists() else "skipped")
        elif step["status"] not in ("ok", "finding"):
            add("FAIL", f"step {name}", f"{step['status']} (exit {step['rc']}, {step['seconds']:.0f} s): see logs/{name}.log")

    bench = _load(workdir / "decode_bench.json")
    correct = (bench or {}).get("correctness") or {}
    if bench is None:
        add("SKIP" if dry_run else "FAIL", "decode kernel bandwidth",
            "needs CUDA" if dry_run else "no decode_bench.json: see logs/decode-bench.log")
    elif not correct.get("ok"):
        add("FAIL", "decode kernel bf16 correctness", correct.get("detail") or "not checked")
    else:
        add("PASS", "decode kernel bf16 correctness", correct["detail"])
    if bench is not None and correct.get("ok") and not bench["rows"]:
        add("FAIL", "decode kernel bandwidth", "no point measured: see logs/decode-bench.log")
    elif bench is not None and correct.get("ok"):
        copy = bench["meta"]["copy_gbs"]
        best = max(bench["rows"], key=lambda r: r["kv_mb"])  # the most bandwidth-bound point
        frac = best["paged_gbs"] / copy
        status = "PASS" if frac >= BANDWIDTH_GOAL else ("GOAL-MISSED" if frac >= BANDWIDTH_BAR else "FAIL")
        add(status, "decode kernel bandwidth",
            f"{100 * frac:.0f}% of copy bandwidth ({best['paged_gbs']:,.0f} of {copy:,.0f} GB/s) at batch "
            f"{best['batch']} x {best['context']} tokens; SDPA on a contiguous cache {best['sdpa_gbs']:,.0f} GB/s; "
            f"goal >= {100 * BANDWIDTH_GOAL:.0f}%, bar {100 * BANDWIDTH_BAR:.0f}%; "
            f"{len(bench['rows'])} of {bench['meta'].get('points_planned', '?')} points measured")

    rows = _load(workdir / "parity.json")
    if rows is None:
        add("FAIL", "engine vs transformers", "no parity.json")
    for row in rows or []:
        add("PASS" if parity_passes(row) else "FAIL", f"engine vs transformers: {row['family']} {row['dtype']}",
            f"{row['tokens_before_first_divergence']}/{row['tokens']} greedy tokens identical before a divergence; "
            f"mean |logit error| vs fp32 engine {row['engine_mean_abs_logit_error']:.3g}, transformers "
            f"{row['transformers_mean_abs_logit_error']:.3g} "
            f"({'every token must match' if row['dtype'] == 'fp32' else f'engine <= {BF16_ERROR_RATIO:g} x transformers'})")

    for name in ("profile-llama", "profile-gemma"):
        doc = _load(workdir / name / "profile.json")
        if doc is None:
            add("FAIL", name, "no profile.json")
            continue
        p, s, m = doc["predicted"], doc["predicted_simulated"], doc["measured"]
        if doc["finding"] or doc["phase"] != "done":
            add("FAIL", f"{name}: completed", f"phase {doc['phase']}, finding {doc['finding']}")
        exact = m.get("kv_pool_bytes") is not None and m["kv_pool_bytes"] == p["kv_pool_bytes"] == m[
            "kv_pool_layout_bytes"]
        add("PASS" if exact else "FAIL", f"{name}: KV pool exact",
            f"measured {m.get('kv_pool_bytes')} B ({doc['measured_basis']['kv_pool_bytes']['how']}), predicted "
            f"{p['kv_pool_bytes']} B, layout {m.get('kv_pool_layout_bytes')} B")
        over = m.get("kv_pool_allocator_overhead_bytes")
        if over is not None:  # CUDA: rounding is the allocator's, apart from the pool's own bytes
            add("PASS" if over >= 0 else "FAIL", f"{name}: KV pool allocator overhead",
                f"{over:,} B ({100 * over / max(m['kv_pool_bytes'], 1):.3f}% of the pool) handed out beyond the pool's "
                f"storages ({m['kv_pool_allocator_bytes']:,} B allocator delta, the engine's buffers included); "
                "never negative (the storages are new allocations); not part of the exact check")
        if m.get("total_memory_bytes") is None:
            add("SKIP" if dry_run else "FAIL", f"{name}: total memory",
                doc["measured_basis"]["total_memory_bytes"]["how"])
        else:
            rel = doc["relative_error"]["total_memory_bytes"]
            status = "PASS" if abs(rel) <= TOTAL_GOAL else ("GOAL-MISSED" if abs(rel) <= TOTAL_TOL else "FAIL")
            add(status, f"{name}: total memory",
                f"measured {m['total_memory_bytes'] / 2**30:.2f} GiB vs predicted {p['total_memory_bytes'] / 2**30:.2f} "
                f"GiB ({100 * rel:+.2f}%; bar 3%, goal 2%); measured as "
                f"{doc['measured_basis']['total_memory_bytes']['how']}")
        run, wl = doc["run"] or {}, doc["workload"]
        asked = min(wl.get("requests", 0) * wl.get("n", 1), doc["deployment"]["max_num_seqs"])
        binds = run.get("max_concurrent_users") is not None and run["max_concurrent_users"] < asked
        add("PASS" if binds else "FAIL", f"{name}: the pool binds",
            f"{run.get('max_concurrent_users')} users reached of {asked} the workload and --max-num-seqs allow; "
            f"peak blocks in use {run.get('peak_blocks_in_use')} of {m.get('num_blocks')}")
        same = all(m.get(k) == s.get(k) for k in ("max_concurrent_users", "preemptions"))
        add("PASS" if same else "FAIL", f"{name}: simulated dynamics = run",
            f"users {s.get('max_concurrent_users')} simulated / {m.get('max_concurrent_users')} measured "
            f"(static {doc['predicted_static'].get('max_concurrent_users')}), preemptions {s.get('preemptions')} / "
            f"{m.get('preemptions')}, utilization {s.get('memory_utilization')} / {m.get('memory_utilization')}")
        cont = doc.get("contiguous")
        if cont and "max_concurrent_users" in cont:
            ok = cont["max_concurrent_users"] == cont["predicted_max_concurrent_users"]
            add("PASS" if ok else "FAIL", f"{name}: contiguous users",
                f"{cont['max_concurrent_users']} measured vs {cont['predicted_max_concurrent_users']} predicted "
                f"(paged run: {m.get('max_concurrent_users')})")

    doc = _load(workdir / "profile-oom" / "profile.json")
    oom = steps.get("profile-oom", {})
    ok = doc is not None and oom.get("rc") == 1 and "out of memory during pool" in (doc.get("finding") or "")
    add("PASS" if ok else "FAIL", "out-of-memory path",
        f"exit {oom.get('rc')} (1 expected), finding: {doc and doc.get('finding')}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("environment")
    c = sub.add_parser("configs")
    c.add_argument("directory", type=Path)
    pa = sub.add_parser("parity")
    pa.add_argument("--device", default="cuda")
    pa.add_argument("--max-tokens", type=int, default=24)
    pa.add_argument("--json", type=Path, required=True)
    pa.add_argument("--small", action="store_true", help="2-layer models (the dry run on CPU)")
    v = sub.add_parser("verdict")
    v.add_argument("workdir", type=Path)
    v.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.command == "environment":
        environment()
    elif args.command == "configs":
        write_configs(args.directory)
    elif args.command == "parity":
        rows = parity(args.device, args.max_tokens, args.small)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        sys.exit(0 if all(parity_passes(r) for r in rows) else 1)
    else:
        results = verdict(args.workdir, args.dry_run)
        for status, check, detail in results:
            print(f"{status:11} {check}: {detail}")
        failed = sum(status == "FAIL" for status, _, _ in results)
        print(f"{len(results) - failed} passed, {failed} failed")
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
