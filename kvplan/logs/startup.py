"""Read what a serving engine printed at start-up: vLLM (V0 and V1 templates) and SGLang.

`parse_startup_log(text)` returns a `StartupLog`: the engine and version, the model and the
settings that size the KV cache, and the figures the engine reported (weights, available KV memory
per worker, tokens, blocks, concurrency, refusals). Every expected line that is absent is named in
`missing`, so a caller can say which figure it could not compare.

Templates recognised (one regex each, tolerant of prefixes such as `(EngineCore_DP0 pid=1)`,
`(VllmWorker rank=1 pid=2)`, `(Worker_PP1_TP0 pid=3)`, `[2025-01-01 00:00:00 TP0]`):

vLLM V1 (0.8+): "vLLM API server version X", "Initializing a V1 LLM engine (vX) with config: k=v, ...",
  "non-default args: {...}", "Model loading took X GiB", "Available KV cache memory: X GiB",
  "GPU KV cache size: N tokens", "Maximum concurrency for N tokens per request: X.XXx",
  "To serve at least one request with the model's max seq len (N), (X GiB KV cache is needed ...
  available KV cache memory (Y GiB). ... estimated maximum model length is M", "Forcing kv cache block
  size to 64".
vLLM V0: "Initializing an LLM engine (vX) with config: ...", "Loading model weights took X GB" (GiB),
  "Memory profiling results: total_gpu_memory=XGiB ... kv_cache_size=YGiB", "the rest of the memory
  reserved for KV Cache is XGiB", "# GPU blocks: N, # CPU blocks: M" / "# cuda blocks: N", "The
  model's max seq len (N) is larger than the maximum number of tokens that can be stored in KV cache (M)".
SGLang: "server_args=ServerArgs(k=v, ...)", "Load weight begin. avail mem=X GB", "Load weight end.
  ... avail mem=X GB, mem usage=Y GB", "KV Cache is allocated. #tokens: N, K size: X GB, V size: Y GB"
  (MLA: "KV size: X GB"), "max_total_num_tokens=N, ... context_len=M". SGLang's "GB" are GiB.

A line `# kvplan: FLAGS` carries kvplan flags for the log (used by test data); `kvplan_args` holds them.
"""

import ast
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import InputError
from ..inputs import MAX_KVPLAN_HEADER_CHARS, STARTUP_LOG, check_command, read_lines

# Numbers have bounded digits: a 400-digit one would be inf as a float, a 5,000-digit one no int at all.
_NUM = r"([0-9][0-9,]{0,24}(?:\.[0-9]{1,18})?)"
_INT = r"([0-9]{1,18})(?![0-9])"
_FLOAT = r"([0-9]{1,18}(?:\.[0-9]{1,18})?)(?![0-9.])"


@dataclass(frozen=True)
class WorkerFigure:
    """A figure one worker printed; `tp_rank`/`pp_rank` are None when the line does not say."""

    value: float
    label: str  # the worker prefix as printed ("" for the driver)
    tp_rank: int | None = None
    pp_rank: int | None = None
    global_rank: int | None = None


@dataclass
class StartupLog:
    engine: str | None = None  # vllm | sglang
    version: str | None = None
    generation: str | None = None  # vLLM: v0 | v1
    model: str | None = None
    settings: dict = field(default_factory=dict)  # vLLM/SGLang setting names -> values as printed
    weights_gib: float | None = None
    total_gpu_gib: float | None = None
    available_kv_gib: list[WorkerFigure] = field(default_factory=list)
    kv_cache_tokens: int | None = None
    num_gpu_blocks: int | None = None
    concurrency_max_model_len: int | None = None
    concurrency: float | None = None
    concurrency_text: str | None = None  # exactly as printed ("1.30")
    refusal: dict | None = None  # max_model_len, needed_gib, available_gib, estimated_max_model_len
    forced_block_size: int | None = None
    sglang: dict = field(default_factory=dict)  # before_gib, after_gib, weight_gib, k_size_gib, ...
    missing: list[str] = field(default_factory=list)
    kvplan_args: list[str] = field(default_factory=list)

    def min_available_kv_gib(self) -> float | None:
        return min((w.value for w in self.available_kv_gib), default=None)


def _f(text: str) -> float:
    return float(text.replace(",", ""))


def _i(text: str) -> int:
    return int(text.replace(",", ""))


_PATTERNS = {
    "v1_version": re.compile(r"vLLM API server version ([0-9][\w.+-]*)"),
    "banner_version": re.compile(r"█\s+version\s+([0-9][\w.+-]*)"),
    "v1_engine": re.compile(r"Initializing a V1 LLM engine \(v?([\w.+-]+)\) with config: (.*)"),
    "v0_engine": re.compile(r"Initializing an LLM engine \(v?([\w.+-]+)\) with config: (.*)"),
    "non_default": re.compile(r"non-default args: (\{.*\})\s*$"),
    "v1_weights": re.compile(r"Model loading took " + _NUM + r" ?GiB"),
    "v0_weights": re.compile(r"Loading model weights took " + _NUM + r" ?GB"),
    "v1_available": re.compile(r"Available KV cache memory: (-?" + _NUM[1:] + r" ?GiB"),
    "v0_rest": re.compile(r"the rest of the memory reserved for KV Cache is (-?" + _NUM[1:] + r" ?GiB"),
    "v0_profile": (re.compile(r"Memory profiling results:"), re.compile(r"total_gpu_memory=" + _NUM + r"GiB"),
                   re.compile(r"kv_cache_size=(-?" + _NUM[1:] + r"GiB")),
    "v0_can_use": re.compile(r"can use total_gpu_memory \(" + _NUM + r"GiB\) x gpu_memory_utilization \(" + _NUM),
    "v1_tokens": re.compile(r"GPU KV cache size: " + _NUM + r" tokens"),
    "gpu_blocks": re.compile(r"(?:^|[\s\]#])(?:GPU|cuda|CUDA) blocks: " + _NUM),
    "concurrency": re.compile(r"Maximum concurrency for " + _NUM + r" tokens per request: " + _FLOAT + "x"),
    "v1_refusal": re.compile(r"max seq len \(" + _INT + r"\), \(" + _FLOAT + r" GiB KV cache is needed, which is larger "
                             r"than the available KV cache memory \((-?" + _FLOAT[1:] + r" GiB\)\.(?: Based on the "
                             r"available memory, the estimated maximum model length is " + _INT + r"\.)?"),
    "v0_refusal": re.compile(r"The model's max seq len \(" + _INT + r"\) is larger than the maximum number of tokens "
                             r"that can be stored in KV cache \(" + _INT + r"\)"),
    "chunked": re.compile(r"max_num_batched_tokens=" + _INT),
    "forced_block": re.compile(r"[Ff]orcing kv cache block size to " + _INT),
    "utilization": re.compile(r"gpu_memory_utilization=" + _FLOAT),
    "sg_args": re.compile(r"server_args=ServerArgs\((.*)\)\s*$"),
    "sg_before": re.compile(r"Load weight begin\. avail mem=" + _NUM + r" ?GB"),
    "sg_after": (re.compile(r"Load weight end\."), re.compile(r"avail mem=" + _NUM + r" ?GB, mem usage=" + _NUM + r" ?GB")),
    "sg_alloc": (re.compile(r"KV Cache is allocated\."), re.compile(r"#tokens: " + _INT + r"(?:, K size: " + _NUM
                                                                     + r" ?GB, V size: " + _NUM + r" ?GB)?(?:, KV size: "
                                                                     + _NUM + r" ?GB)?")),
    "sg_total": (re.compile(r"max_total_num_tokens=" + _NUM), re.compile(r"context_len=" + _INT)),
    "kvplan": re.compile(r"^\s*#\s*kvplan:\s*(.*)$"),
}

_RANK_PATTERNS = (
    re.compile(r"\((?:VllmWorker |Worker_)PP" + _INT + "_TP" + _INT),
    re.compile(r"\((?:VllmWorker |Worker_)TP" + _INT),  # vLLM 0.10: `(VllmWorker TP1 pid=..)`
    re.compile(r"\(VllmWorker rank=" + _INT),
    re.compile(r"\(RayWorkerWrapper pid=\d+[^)]*\)"),  # `(RayWorkerWrapper pid=374, ip=10.0.0.1)`
    re.compile(r"\(VllmWorkerProcess pid=\d+\)"),
)


def _in_order(line: str, patterns: tuple[re.Pattern, ...]) -> tuple | None:
    """The groups of the regex `p0.*?p1.*?p2`: each pattern searched after the previous one's match.
    The same answer in linear time; that regex backtracks cubically on a line that repeats p0."""
    groups, pos = (), 0
    for pattern in patterns:
        m = pattern.search(line, pos)
        if m is None:
            return None
        groups, pos = groups + m.groups(), m.end()
    return groups


def _ends_with(line: str, char: str) -> bool:
    """Guards the patterns anchored at `CHAR\\s*$`: without it each start of their lead costs a scan to the end."""
    return line.rstrip().endswith(char)


def parse_startup_log(text: str) -> StartupLog:
    return parse_startup_lines(text.splitlines())


def parse_startup_lines(lines: Iterable[str]) -> StartupLog:
    log = StartupLog()
    for line in lines:
        _parse_line(line, log)
    _resolve(log)
    return log


def read_startup_log(path: str) -> StartupLog:
    """Streamed line by line within kvplan.inputs.STARTUP_LOG; a stray non-UTF-8 byte is replaced, not fatal."""
    try:
        log = parse_startup_lines(line.rstrip("\r\n") for _, line in read_lines(path, STARTUP_LOG, errors="replace"))
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    if log.engine is None:
        raise InputError(f"{path}: no vLLM or SGLang start-up line found (is this a start-up log?)")
    return log


def _parse_line(line: str, log: StartupLog) -> None:
    p = _PATTERNS
    if m := p["kvplan"].match(line):
        check_command(m.group(1), "its `# kvplan:` line", MAX_KVPLAN_HEADER_CHARS)
        try:
            log.kvplan_args += shlex.split(m.group(1))
        except ValueError as exc:  # an unbalanced quote
            raise InputError(f"its `# kvplan:` line does not split as shell words ({exc}): {m.group(1)[:60]!r}") from None
        return
    if line.lstrip().startswith("#") and not p["gpu_blocks"].search(line):
        return  # commentary around a pasted log; vLLM V0's "# GPU blocks: N" is the one log line so written
    if m := p["v1_version"].search(line) or p["banner_version"].search(line):
        log.engine, log.version = "vllm", log.version or m.group(1)
    if m := p["v1_engine"].search(line):
        log.engine, log.generation = "vllm", "v1"
        log.version = log.version or m.group(1)
        _config_pairs(m.group(2), log)
    elif m := p["v0_engine"].search(line):
        log.engine, log.generation = "vllm", "v0"
        log.version = log.version or m.group(1)
        _config_pairs(m.group(2), log)
    if _ends_with(line, "}") and (m := p["non_default"].search(line)):
        log.engine = log.engine or "vllm"
        try:
            args = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            args = {}
        for key, value in args.items() if isinstance(args, dict) else ():
            if key in ("model", "model_tag") and isinstance(value, str):
                log.model = log.model or value
            else:
                log.settings.setdefault(key, value)
    if m := p["v1_weights"].search(line):
        log.engine, log.weights_gib = log.engine or "vllm", _f(m.group(1))
    elif m := p["v0_weights"].search(line):
        log.engine, log.weights_gib = log.engine or "vllm", _f(m.group(1))
    if m := p["v1_available"].search(line):
        log.engine = log.engine or "vllm"
        log.generation = log.generation or "v1"
        log.available_kv_gib.append(_worker(line, _f(m.group(1))))
    elif m := p["v0_rest"].search(line):
        log.engine, log.generation = log.engine or "vllm", log.generation or "v0"
        log.available_kv_gib.append(_worker(line, _f(m.group(1))))
    elif g := _in_order(line, p["v0_profile"]):
        log.engine, log.generation = log.engine or "vllm", log.generation or "v0"
        log.total_gpu_gib = _f(g[0])
        log.available_kv_gib.append(_worker(line, _f(g[1])))
        if util := p["utilization"].search(line):
            log.settings.setdefault("gpu_memory_utilization", float(util.group(1)))
    if m := p["v0_can_use"].search(line):
        log.total_gpu_gib = _f(m.group(1))
        log.settings.setdefault("gpu_memory_utilization", float(m.group(2)))
    if m := p["v1_tokens"].search(line):
        log.engine, log.kv_cache_tokens = log.engine or "vllm", _i(m.group(1))
    if m := p["gpu_blocks"].search(line):
        log.engine = log.engine or "vllm"
        log.num_gpu_blocks = _i(m.group(1))
    if m := p["concurrency"].search(line):
        log.concurrency_max_model_len = _i(m.group(1))
        log.concurrency_text = m.group(2)
        log.concurrency = float(m.group(2))
    if m := p["v1_refusal"].search(line):
        log.engine = log.engine or "vllm"
        log.refusal = {"max_model_len": int(m.group(1)), "needed_gib": float(m.group(2)),
                       "available_gib": float(m.group(3)),
                       "estimated_max_model_len": int(m.group(4)) if m.group(4) else None}
    elif m := p["v0_refusal"].search(line):
        log.engine, log.generation = log.engine or "vllm", log.generation or "v0"
        log.refusal = {"max_model_len": int(m.group(1)), "kv_cache_tokens": int(m.group(2))}
    if (m := p["chunked"].search(line)) and "max_total_num_tokens" not in line:
        log.settings.setdefault("max_num_batched_tokens", int(m.group(1)))
    if m := p["forced_block"].search(line):
        log.forced_block_size = int(m.group(1))
    _parse_sglang_line(line, log)


def _parse_sglang_line(line: str, log: StartupLog) -> None:
    p, sg = _PATTERNS, log.sglang
    if _ends_with(line, ")") and (m := p["sg_args"].search(line)):
        log.engine = "sglang"
        _config_pairs(m.group(1), log)
        log.model = log.settings.get("model_path") or log.model
    if m := p["sg_before"].search(line):
        log.engine = "sglang"
        sg["before_gib"] = min(sg.get("before_gib", float("inf")), _f(m.group(1)))
    if g := _in_order(line, p["sg_after"]):
        log.engine = "sglang"
        sg["after_gib"] = min(sg.get("after_gib", float("inf")), _f(g[0]))
        log.weights_gib = max(log.weights_gib or 0.0, _f(g[1]))
    if g := _in_order(line, p["sg_alloc"]):
        log.engine = "sglang"
        sg["tokens"] = _i(g[0])
        if g[1]:
            sg["k_size_gib"], sg["v_size_gib"] = _f(g[1]), _f(g[2])
        if g[3]:
            sg["kv_size_gib"] = _f(g[3])
    if g := _in_order(line, p["sg_total"]):
        log.engine = "sglang"
        log.kv_cache_tokens = _i(g[0])
        sg["context_len"] = int(g[1])


def _worker(line: str, value: float) -> WorkerFigure:
    for pattern in _RANK_PATTERNS:
        m = pattern.search(line)
        if not m:
            continue
        label = m.group(0).strip("()")
        groups = m.groups()
        if len(groups) == 2:
            return WorkerFigure(value, label, tp_rank=int(groups[1]), pp_rank=int(groups[0]))
        if len(groups) == 1 and "TP" in pattern.pattern:
            return WorkerFigure(value, label, tp_rank=int(groups[0]))
        if len(groups) == 1:
            return WorkerFigure(value, label, global_rank=int(groups[0]))
        return WorkerFigure(value, label)
    return WorkerFigure(value, "", global_rank=0)


# An unclosed quote or bracket runs to the end of the text: were it to fail instead, each `k=` would cost a scan.
_PAIR = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*(?:'|$)|\"(?:[^\"\\]|\\.)*(?:\"|$)|\[[^\]]*(?:\]|$)|\{[^}]*(?:\}|$)|[^,]*)")


def _config_pairs(text: str, log: StartupLog) -> None:
    """`k=v, k=v` from vLLM's engine config line or SGLang's ServerArgs repr."""
    for key, raw in _PAIR.findall(text):
        value = raw.strip()
        if value[:1] in "'\"":
            value = value[1:-1]
        log.settings.setdefault(key, value)
    if "model" in log.settings and log.model is None:
        log.model = log.settings["model"]


def _resolve(log: StartupLog) -> None:
    if log.engine == "vllm" and log.generation is None:
        log.generation = "v0" if log.num_gpu_blocks is not None and log.kv_cache_tokens is None else "v1"
    if log.engine == "vllm":
        expected = {"model": log.model, "weights (Model loading took)": log.weights_gib,
                    "available KV cache memory": log.available_kv_gib or None,
                    "KV cache size (tokens or blocks)": log.kv_cache_tokens or log.num_gpu_blocks,
                    "maximum concurrency": log.concurrency}
        if log.refusal:  # a refused start logs no pool
            expected.pop("KV cache size (tokens or blocks)")
            expected.pop("maximum concurrency")
        log.missing = [name for name, value in expected.items() if value is None]
    elif log.engine == "sglang":
        sg = log.sglang
        if "before_gib" not in sg and "after_gib" in sg and log.weights_gib is not None:
            sg["before_gib"] = sg["after_gib"] + log.weights_gib  # SGLang's "mem usage" is before - after
            sg["before_derived"] = True
        expected = {"model": log.model, "mem_fraction_static": log.settings.get("mem_fraction_static"),
                    "Load weight begin (avail mem)": log.sglang.get("before_gib"),
                    "Load weight end (avail mem)": log.sglang.get("after_gib"),
                    "KV Cache is allocated (#tokens)": log.sglang.get("tokens")}
        log.missing = [name for name, value in expected.items() if value is None]
