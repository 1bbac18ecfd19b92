"""Time and peak memory of kvplan on the nastiest inputs of issue 13: each must end within 20 s and 2 GiB.

    python benchmarks/hostile_inputs.py [--each] [--quick] [--only NAME ...] [--json out.json]

Each case builds its input in a temp directory (not timed), then runs `kvplan.cli.main` on it and
records the exit code, the stderr line and the seconds. Without --each every case runs in one
child process and its peak RSS (ru_maxrss) is the high-water mark over all cases, an upper bound
for each; with --each every case gets its own process and its own peak. --quick leaves out the
cases that take seconds by design (the largest logs and headers, the Hub deadlines): what
tests/test_bounds.py runs in CI; the nightly fuzz profile runs them all.
"""

import argparse
import contextlib
import gzip
import io
import json
import os
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 20.0
MEMORY_LIMIT_BYTES = 2 << 30
MiB = 1 << 20
CONFIG = {"model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
          "hidden_size": 256, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}
LOG = ROOT / "tests" / "data" / "vllm_logs" / "llama-3.1-8b-v0-20k-vllm10517.log"
ESC = "\x1b[31mRED\x1b]0;title\x07"  # colour, then a window-title sequence: what a terminal would act on
# What a terminal acts on, which no message may carry raw (a name is shown escaped: `\x1b`).
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _sparse(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def _write(path: Path, data: str | bytes) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def _model(d: Path, header: bytes | None = None, index: bytes | None = None, config: dict | None = None,
           raw: bytes | None = None) -> str:
    d.mkdir()
    _write(d / "config.json", json.dumps(config or CONFIG))
    if header is not None or raw is not None:
        _write(d / "model.safetensors", raw if raw is not None else struct.pack("<Q", len(header)) + header)
    if index is not None:
        _write(d / "model.safetensors.index.json", index)
    return str(d)


def _filled(prefix: bytes, unit: bytes, size: int, suffix: bytes) -> bytes:
    return prefix + unit * ((size - len(prefix) - len(suffix)) // len(unit)) + suffix


def _symlink_loop(path: Path) -> str:
    other = path.with_name(path.name + ".other")
    path.symlink_to(other)
    other.symlink_to(path)
    return str(path)


def _dir(path: Path) -> str:
    path.mkdir()
    return str(path)


def _gzip_bomb(size: int) -> bytes:
    """`size` bytes of JSON whitespace, gzipped to ~0.1% of that, built without holding `size` bytes."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as f:
        f.write(b"{")
        for _ in range(size // MiB):
            f.write(b" " * MiB)
        f.write(b"}")
    return out.getvalue()


def _mapping_bomb(levels: int = 25) -> str:
    parts = ["a0: &a0 {x: 1, y: 1}"] + [f"a{i}: &a{i} {{x: *a{i - 1}, y: *a{i - 1}}}" for i in range(1, levels)]
    return "{" + ", ".join(parts) + "}"


def _redos_log(size: int) -> bytes:
    """Lines just under the 64 KiB cap repeating the leads of the patterns that used to backtrack."""
    seeds = [b"Memory profiling results: total_gpu_memory=1GiB ", b"Load weight end. avail mem=1 GB ",
             b"max_total_num_tokens=1 ", b"non-default args: {", b"server_args=ServerArgs(a='", b"KV Cache is allocated. ",
             b"Memory profiling takes ", b"memory snapshot: ", b"Free memory on device (1/2 GiB) on startup. ",
             b"[a TP1 Load weight begin. avail mem=1 GB ", b"GPU 0: NVIDIA x ",
             b"(RayWorkerWrapper pid=1 Available KV cache memory: 1 GiB "]
    lines = [_filled(b"", seed, 64 * 1024 - 1, b"\n") for seed in seeds]
    body = b"".join(lines[i % len(lines)] for i in range(size // len(lines[0])))
    return LOG.read_bytes() + body[: size - LOG.stat().st_size - 1]


def _expansion_script() -> str:
    lines, prev = ["A=aaaaaaaaaaaaaaaa"], "A"
    for i in range(12):
        lines.append(f'V{i}="' + f"${prev}" * 8 + '"')
        prev = f"V{i}"
    return "\n".join(lines + [f"vllm serve ${prev}"]) + "\n"


# name -> (quick, build(tmp) -> argv or (argv, env), or a Hub scenario); each must exit 2 with one line,
# except those in ANSWERS, which must give their answer (exit 0).
ANSWERS = {"start-up log 1 MiB of backtracking bait", "start-up log 16 MiB of backtracking bait", "COLUMNS=0",
           "hub: 1,024 shards (the most kvplan reads)"}
CASES = {
    "config.json 2 GB (sparse)": (True, lambda t: ["estimate", _sparse(t / "config.json", 2 * 10**9), "--gpu", "H100"]),
    "config.json /dev/zero": (True, lambda t: ["estimate", "/dev/zero", "--gpu", "H100"]),
    "config.json FIFO": (True, lambda t: ["estimate", _fifo(t / "config.json"), "--gpu", "H100"]),
    "config.json 4 MiB of empty lists": (True, lambda t: ["estimate", _write(
        t / "config.json", _filled(b'{"x": [', b"[],", 4 * MiB, b"[]]}")), "--gpu", "H100", "--allow-unknown-arch"]),
    "config.json nested 1M deep": (True, lambda t: ["estimate", _write(
        t / "config.json", "[" * 10**6 + "]" * 10**6), "--gpu", "H100"]),
    "config.json 2**31 layers": (True, lambda t: ["estimate", _model(
        t / "m", config={**CONFIG, "num_hidden_layers": 2**31}), "--gpu", "H100"]),
    "--layers 2**31": (True, lambda t: ["estimate", "--layers", str(2**31), "--kv-heads", "8", "--head-dim", "128",
                                        "--gpu", "H100"]),
    "safetensors header 32 MiB of empty dicts": (True, lambda t: ["estimate", _model(
        t / "m", header=_filled(b'{"x": [', b"{},", 32 * MiB - 64, b"{}]}")), "--gpu", "H100"]),
    "safetensors header 32 MiB, an empty dict per 8 bytes": (False, lambda t: ["estimate", _model(
        t / "m", header=_filled(b'{"x": [', b"{}     ,", 32 * MiB - 64, b"{}]}")), "--gpu", "H100"]),
    "safetensors index 32 MiB, an empty list per 8 bytes": (False, lambda t: ["estimate", _model(
        t / "m", index=_filled(b'{"weight_map": [', b"[]     ,", 32 * MiB - 64, b"[]]}")), "--gpu", "H100"]),
    "safetensors index 32 MiB of distinct tensor names": (False, lambda t: ["estimate", _model(
        t / "m", index=_names_index(32 * MiB - 64)), "--gpu", "H100"]),
    "safetensors header length 2**63": (True, lambda t: ["estimate", _model(t / "m", raw=struct.pack("<Q", 2**63)),
                                                         "--gpu", "H100"]),
    "deployment YAML 2 GB (sparse)": (True, lambda t: ["check", _sparse(t / "d.yaml", 2 * 10**9)]),
    "deployment YAML /dev/zero": (True, lambda t: ["check", "/dev/zero"]),
    "deployment YAML mapping alias bomb": (True, lambda t: ["check", _write(
        t / "d.yaml", f"model: {_mapping_bomb()}\ngpu: H100\n")]),
    "deployment YAML list alias bomb": (True, lambda t: ["check", _write(t / "d.yaml", "\n".join(
        ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]"
                                                     for i in range(1, 9)]) + "\n")]),
    "compose file mapping alias bomb": (True, lambda t: ["check", _write(
        t / "compose.yaml", f"services:\n  vllm:\n    image: vllm/vllm-openai\n    command: {_mapping_bomb()}\n")]),
    "user config mapping alias bomb": (True, lambda t: (["estimate", "acme/not-cached"], {
        "KVPLAN_CONFIG": _write(t / "kvplan.yaml", f"online: {_mapping_bomb()}\n"), "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0"})),
    "start-up log 2 GB (sparse)": (True, lambda t: ["explain-log", _sparse(t / "vllm.log", 2 * 10**9)]),
    "start-up log /dev/zero": (True, lambda t: ["explain-log", "/dev/zero"]),
    "start-up log 1 MiB of backtracking bait": (True, lambda t: ["explain-log", _write(t / "v.log", _redos_log(MiB)),
                                                                  "-f", "json"]),
    "start-up log 16 MiB of backtracking bait": (False, lambda t: ["explain-log", _write(
        t / "v.log", _redos_log(16 * MiB - 1)), "-f", "json"]),
    "start-up log header with 2**31 layers": (True, lambda t: ["explain-log", _write(
        t / "v.log", f"# kvplan: --layers {2**31} --kv-heads 8 --head-dim 128\n" + LOG.read_text())]),
    "--from /dev/zero": (True, lambda t: ["estimate", "--from", "/dev/zero", "--gpu", "H100"]),
    "--from variable expansion bomb": (True, lambda t: ["estimate", "--from", _write(
        t / "serve.sh", _expansion_script()), "--gpu", "H100"]),
    "trace with a 600 MB line (sparse)": (True, lambda t: ["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace",
                                                           _sparse(t / "t.jsonl", 600 * 10**6)]),
    "trace line nested 1M deep": (True, lambda t: ["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace", _write(
        t / "t.jsonl", '{"prompt": ' + "[" * 10**6 + "]" * 10**6 + "}\n")]),
    "sweep --context 1:100000000:1": (True, lambda t: ["sweep", "-m", "qwen3-8b", "--gpu", "H100", "--context",
                                                       "1:100000000:1"]),
    "sweep --context 1:100000:x1.0000001": (True, lambda t: ["sweep", "-m", "qwen3-8b", "--gpu", "H100", "--context",
                                                             "1:100000:x1.0000001"]),
    "simulate --output-len of 400 digits": (True, lambda t: ["simulate", "llama-3.1-8b", "--gpu", "H100",
                                                             "--output-len", "9" * 400]),
    # the second pass (an attacker's re-check of issue 13)
    "model directory named with escape sequences": (True, lambda t: ["estimate", _dir(t / ("m" + ESC)), "--gpu", "H100"]),
    "trace path with escape sequences (missing)": (True, lambda t: ["simulate", "llama-3.1-8b", "--gpu", "H100",
                                                                      "--trace", str(t / ("t" + ESC + ".jsonl"))]),
    "deployment YAML key with escape sequences": (True, lambda t: ["check", _write(
        t / "d.yaml", 'model: llama-3.1-8b\ngpu: H100\n"\\e[2J\\e[31mkey": 1\n')]),
    "config.json path of 300 characters": (True, lambda t: ["estimate", str(t / ("a" * 300)), "--gpu", "H100"]),
    "deployment YAML symlink loop": (True, lambda t: ["check", _symlink_loop(t / "d.yaml")]),
    "-o into a parent that is a file": (True, lambda t: ["check", str(ROOT / "examples" / "passing.yaml"), "-f", "json",
                                                        "-o", _write(t / "f", "x") + "/" + ESC + "/o.json"]),
    "--plot with a suffix matplotlib cannot write": (True, lambda t: ["simulate", "llama-3.1-8b", "--gpu", "H100",
                                                                      "--requests", "3", "--plot", str(t / "p.json")]),
    "--engine-version of 5,000 digits": (True, lambda t: ["explain-log", str(LOG), "--engine-version", "0." + "9" * 5000]),
    "COLUMNS=0": (True, lambda t: (["models"], {"COLUMNS": "0"})),
    "hub: redirect to a file:// URL": (True, "hub:file-redirect"),
    "hub: 200 MiB gzip bomb sent as Content-Encoding gzip": (True, "hub:gzip-bomb"),
    "hub: endless repo listing": (True, "hub:listing"),
    "hub: endless config.json": (True, "hub:config"),
    "hub: config.json dripped a byte at a time": (False, "hub:drip"),
    "hub: redirect loop": (True, "hub:redirect"),
    # the third pass: the whole Hub resolution bounded
    "hub: index naming 3,000 shards": (True, "hub:3000-shards"),
    "hub: listing of 3,000 shards, no index": (True, "hub:3000-listed"),
    "hub: 1,024 shards (the most kvplan reads)": (False, "hub:1024-shards"),
    "hub: 1,024 shards, each header 1 s late": (False, "hub:1024-late"),
    "hub: safetensors index 32 MiB of distinct tensor names": (False, "hub:names-index"),
}


def _names_index(size: int) -> bytes:
    """A valid index of distinct tensor names all in one shard: the most strings a 32 MiB index holds."""
    entry = b'"t%08d":"a.safetensors",'
    entries = (entry % i for i in range((size - 40) // len(entry % 0)))
    return b'{"weight_map":{' + b"".join(entries) + b'"t":"a.safetensors"}}'


def _shard(i: int) -> bytes:
    header = json.dumps({f"t{i}": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(4)


def _shards(n: int, index: bool) -> dict[str, bytes]:
    names = [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    files = {name: _shard(k) for k, name in enumerate(names)}
    if index:
        files["model.safetensors.index.json"] = json.dumps(
            {"metadata": {"total_size": 4 * n}, "weight_map": {f"t{k}": name for k, name in enumerate(names)}}).encode()
    return files


def _hub_case(kind: str, t: Path):
    """A loopback Hub (tests/hub_server.py) with one hostile answer; returns argv, env and the server."""
    sys.path.insert(0, str(ROOT / "tests"))
    import huggingface_hub.constants as constants
    from hub_server import HubServer

    server = HubServer()
    repos = {"hub:3000-shards": lambda: _shards(3000, index=True), "hub:3000-listed": lambda: _shards(3000, index=False),
             "hub:1024-shards": lambda: _shards(1024, index=True), "hub:1024-late": lambda: _shards(1024, index=True),
             "hub:names-index": lambda: {"model.safetensors.index.json": _names_index(32 * MiB - 64)}}
    server.add_repo("acme/tiny", {"config.json": json.dumps(CONFIG).encode(), **repos.get(kind, dict)()})
    pattern = {"hub:listing": "^/api/models/", "hub:1024-late": "^/cdn/"}.get(kind, "/resolve/.*/config.json")
    faults = {"hub:listing": lambda: {"endless": b'{"sha": "'}, "hub:config": lambda: {"endless": b"{"},
              "hub:drip": lambda: {"drip_s": 0.1}, "hub:redirect": lambda: {"redirect_loop": True},
              "hub:file-redirect": lambda: {"status": 302, "headers": {"Location": "file:///etc/passwd"}},
              "hub:gzip-bomb": lambda: {"body": _gzip_bomb(200 * MiB), "headers": {"Content-Encoding": "gzip"}},
              "hub:1024-late": lambda: {"delay_s": 1.0}}  # 128 rounds of 8: two minutes without the deadline
    if kind in faults:
        server.fault(pattern, **faults[kind]())
    constants.HF_HUB_OFFLINE = False
    constants.ENDPOINT = server.url
    # HF_HUB_DOWNLOAD_TIMEOUT at its default (10 s): the drip (~20 s of body) and the late shards end at
    # the 12 s deadline for all of one command's Hub requests.
    # Online in any caller's environment (the test suite sets TRANSFORMERS_OFFLINE=1): a refusal for being
    # offline would never reach the server (within_bounds rejects it).
    env = {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(t / "hub"), "HF_HUB_OFFLINE": "0",
           "TRANSFORMERS_OFFLINE": "0"}
    return ["estimate", "acme/tiny", "--online", "--allow-unknown-arch"], env, server


def run_cases(names: list[str]) -> list[dict]:
    """In this process: build each input, run the CLI on it, time it."""
    from kvplan.cli import main

    results = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="kvplan-hostile-") as tmp:
            build = CASES[name][1]
            server = None
            if isinstance(build, str):
                argv, env, server = _hub_case(build, Path(tmp))
            else:
                built = build(Path(tmp))
                argv, env = built if isinstance(built, tuple) else (built, {})
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            err = io.StringIO()
            started = time.perf_counter()
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    rc = main(argv)
            finally:
                seconds = time.perf_counter() - started
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
                if server is not None:
                    server.stop()
            results.append({"case": name, "rc": rc, "seconds": round(seconds, 3), "stderr": err.getvalue()})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    for r in results:
        r["peak_rss_bytes"] = peak
    return results


def run_child(names: list[str]) -> list[dict]:
    out = subprocess.run([sys.executable, __file__, "--child", *names], capture_output=True, text=True,
                         timeout=TIME_LIMIT_S * len(names) + 60)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def within_bounds(result: dict) -> bool:
    answered = result["rc"] == 0 if result["case"] in ANSWERS else (
        result["rc"] == 2 and result["stderr"].count("\n") == 1 and result["stderr"].startswith("kvplan: error: "))
    if result["case"].startswith("hub:") and "forbids the Hub" in result["stderr"]:
        answered = False  # refused offline: the hostile server was never asked
    return answered and not RAW_CONTROL.search(result["stderr"].rstrip("\n")) and result["seconds"] < TIME_LIMIT_S and result["peak_rss_bytes"] < MEMORY_LIMIT_BYTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--each", action="store_true", help="one process per case (a peak per case)")
    parser.add_argument("--quick", action="store_true", help="leave out the cases that take seconds by design")
    parser.add_argument("--only", nargs="*", help="case names")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        json.dump(run_cases(args.child), sys.stdout)
        return
    names = args.only or [n for n, (quick, _) in CASES.items() if quick or not args.quick]
    results = [r for n in names for r in run_child([n])] if args.each else run_child(names)
    for r in results:
        ok = within_bounds(r)
        print(f"{'ok  ' if ok else 'FAIL'} {r['seconds']:7.2f} s {r['peak_rss_bytes'] / MiB:7.0f} MiB  rc={r['rc']}  "
              f"{r['case']}: {r['stderr'].strip()[:110]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
