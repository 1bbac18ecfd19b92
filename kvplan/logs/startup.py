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
from pathlib import Path

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
    # the memory profile vLLM logs (DEBUG from 0.9.2, INFO after graph capture from 0.11, INFO in V0), GiB
    activation_gib: float | None = None
    non_torch_gib: float | None = None
    weights_and_non_torch_gib: float | None = None  # later releases print only their sum ("consumed memory")
    cuda_graph_gib: float | None = None  # the pre-allocation estimate (0.18+) or what capturing took
    cuda_graph_basis: str | None = None  # "estimate" | "captured"
    requested_gib: float | None = None  # total x gpu_memory_utilization as vLLM printed it
    usage_context: str | None = None  # "serve" (OPENAI_API_SERVER) | "offline" (LLM_CLASS)
    gpu_name: str | None = None  # as a MoE config path or collect_env names it ("NVIDIA H100 80GB HBM3")
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
    # Everything after the lead, to the end of the line: a terminal may wrap the repr, so its `)` may be missing
    # (_server_args trims it); matching `(.*?)\)?\s*$` instead costs a scan to the end per lead.
    "sg_args": re.compile(r"server_args=ServerArgs\((.*)"),
    "sg_fraction": re.compile(r"mem_fraction_static\W{1,3}([0-9]{0,18}\.[0-9]{1,18})"),
    "sg_before": re.compile(r"Load weight begin\. avail mem=" + _NUM + r" ?GB"),
    "sg_after": (re.compile(r"Load weight end\."),
                 re.compile(r"avail mem=" + _NUM + r" ?GB(?:, mem usage=(-?" + _NUM[1:] + r" ?GB)?")),
    # 0.4.1 printed no #tokens ("KV Cache is allocated. K size: X GB, V size: X GB."); later builds insert "dtype: ...".
    # Linear as it stands: all after the lead is optional, so the first lead matches and `.*?` scans once.
    "sg_alloc": re.compile(r"KV Cache is allocated\.(?:.*?#tokens: " + _INT + r",?)?(?: K size: " + _NUM
                           + r" ?GB, V size: " + _NUM + r" ?GB)?(?: KV size: " + _NUM + r" ?GB)?"),
    "sg_total": (re.compile(r"max_total_num_tokens=" + _NUM), re.compile(r"context_len=" + _INT)),
    "kvplan": re.compile(r"^\s*#\s*kvplan:\s*(.*)$"),
    "v1_profile": (re.compile(r"Memory profiling takes "),
                   re.compile(r"torch peak memory increase: " + _NUM + r" ?GiB; non-torch forward increase memory: "
                              + _NUM + r" ?GiB; weights memory: " + _NUM + r" ?GiB")),
    "v1_requested": re.compile(r"Requested memory: " + _FLOAT + r" \(util\), " + _NUM + r" ?GiB"),
    "v1_snapshot_total": (re.compile(r"memory snapshot: "), re.compile(r"total_memory=" + _NUM + r" ?GiB")),
    "v1_usage": (re.compile(r"Free memory on device \(" + _NUM + r"/" + _NUM + r" GiB\) on startup\."),
                 re.compile(r"Actual usage is " + _NUM + r" GiB for weight, " + _NUM + r" GiB for peak activation, "
                            + _NUM + r" GiB for non-torch memory, and " + _NUM + r" GiB for CUDAGraph memory")),
    "v1_consumed": re.compile(r"Actual usage is " + _NUM + r" GiB for consumed memory \(weights \+ non-torch\), "
                              + _NUM + r" GiB for peak activation, and " + _NUM + r" GiB for CUDAGraph memory"),
    "v0_profile_terms": (re.compile(r"Memory profiling results:"), re.compile(r"peak_torch_memory=" + _NUM + r"GiB"),
                         re.compile(r"non_torch_memory=" + _NUM + r"GiB")),
    "v1_free_total": re.compile(r"Free memory on device (?:\S+ )?\(" + _NUM + r"/" + _NUM + r" GiB\)"),
    "graph_estimate": re.compile(r"Estimated CUDA graph memory: (-?" + _NUM[1:] + r" GiB total"),
    "graph_captured": re.compile(r"Graph capturing finished in \d+ secs?, took " + _NUM + r" GiB"),
    "v0_terms": re.compile(r"model weights take " + _NUM + r" ?GiB; non_torch_memory takes " + _NUM
                           + r" ?GiB; PyTorch activation peak memory takes " + _NUM + r" ?GiB"),
    # a MoE config path names the GPU; so does collect_env's "GPU 0: NVIDIA ..." at the end of a line (see _gpu_name)
    "gpu_name": re.compile(r"device_name=(NVIDIA_[A-Za-z0-9_\-]+|AMD_[A-Za-z0-9_\-]+)"),
    "gpu_name_env": re.compile(r"GPU [0-9]+: (NVIDIA [^,;\n]+)"),
    "defaulting": re.compile(r"Defaulting (max_num_seqs|max_num_batched_tokens) to " + _INT + r" for (\w+) usage context"),
    "sg_type": re.compile(r"type=(\w+)"),
}

_RANK_PATTERNS = (  # `(...)` or, in some builds, `[...]`
    re.compile(r"[(\[](?:VllmWorker |Worker_)PP" + _INT + "_TP" + _INT),
    re.compile(r"[(\[](?:VllmWorker |Worker_)TP" + _INT),  # vLLM 0.10: `(VllmWorker TP1 pid=..)`
    re.compile(r"[(\[]VllmWorker rank=" + _INT),
    # `(RayWorkerWrapper pid=374, ip=10.0.0.1)`; the label stops at any bracket, so an unclosed one scans once
    re.compile(r"[(\[]RayWorkerWrapper pid=[0-9]+[^()\[\]]*[)\]]"),
    re.compile(r"[(\[]VllmWorkerProcess pid=[0-9]+[)\]]"),
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
    log.kvplan_args = _relative_to(log.kvplan_args, Path(path).parent)
    return log


def _relative_to(args: list[str], folder: Path) -> list[str]:
    """A `# kvplan: --model configs/x.json` path names a file beside the log, wherever kvplan runs from."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--model" and not Path(out[i + 1]).is_absolute() and (folder / out[i + 1]).is_file():
            out[i + 1] = str(folder / out[i + 1])
    return out


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
    _parse_profile_line(line, log)
    _parse_sglang_line(line, log)


def _parse_profile_line(line: str, log: StartupLog) -> None:
    """The memory-profile terms; each worker prints its own, the largest (the binding one) is kept."""
    p = _PATTERNS
    if g := _in_order(line, p["v1_profile"]):
        log.engine = log.engine or "vllm"
        _keep_max(log, activation_gib=_f(g[0]), non_torch_gib=_f(g[1]), weights_gib=_f(g[2]))
    elif g := _in_order(line, p["v1_usage"]):
        log.engine = log.engine or "vllm"
        log.total_gpu_gib = log.total_gpu_gib or _f(g[1])
        _keep_max(log, weights_gib=_f(g[2]), activation_gib=_f(g[3]), non_torch_gib=_f(g[4]))
        if log.cuda_graph_gib is None:
            log.cuda_graph_gib, log.cuda_graph_basis = _f(g[5]), "captured"
    elif m := p["v1_consumed"].search(line):
        log.engine = log.engine or "vllm"
        _keep_max(log, weights_and_non_torch_gib=_f(m.group(1)), activation_gib=_f(m.group(2)))
        if log.cuda_graph_gib is None:
            log.cuda_graph_gib, log.cuda_graph_basis = _f(m.group(3)), "captured"
    elif g := _in_order(line, p["v0_profile_terms"]):  # 0.6.4-0.6.6: peak_torch includes the weights
        _keep_max(log, non_torch_gib=_f(g[1]))
        log.sglang.setdefault("_v0_peak_torch_gib", _f(g[0]))
    if m := p["v1_free_total"].search(line):
        log.total_gpu_gib = log.total_gpu_gib or _f(m.group(2))
    elif m := p["v0_terms"].search(line):
        _keep_max(log, weights_gib=_f(m.group(1)), non_torch_gib=_f(m.group(2)), activation_gib=_f(m.group(3)))
    if m := p["v1_requested"].search(line):
        log.requested_gib = _f(m.group(2))
        log.settings.setdefault("gpu_memory_utilization", float(m.group(1)))
    if g := _in_order(line, p["v1_snapshot_total"]):
        log.total_gpu_gib = _f(g[0])
    if m := p["graph_estimate"].search(line):
        log.cuda_graph_gib, log.cuda_graph_basis = _f(m.group(1)), "estimate"
    elif (m := p["graph_captured"].search(line)) and log.cuda_graph_basis != "estimate":
        log.cuda_graph_gib, log.cuda_graph_basis = _f(m.group(1)), "captured"
    if log.gpu_name is None:
        log.gpu_name = _gpu_name(line)
    if m := p["defaulting"].search(line):
        log.settings.setdefault(m.group(1), int(m.group(2)))
        log.usage_context = "offline" if m.group(3) == "LLM_CLASS" else "serve"


def _gpu_name(line: str) -> str | None:
    """The first GPU name the line gives: a MoE config path's, or collect_env's "GPU N: NVIDIA ..." ending the line."""
    found = []
    if m := _PATTERNS["gpu_name"].search(line):
        found.append((m.start(), m.group(1)))
    # looked for only past the last `,` or `;` (none may follow it): in the whole line each lead costs a scan to the end
    tail_start = max(line.rfind(","), line.rfind(";")) + 1
    if m := _PATTERNS["gpu_name_env"].search(line, tail_start):
        found.append((m.start(), m.group(1)))
    return min(found)[1].replace("_", " ").strip() if found else None


def _keep_max(log: StartupLog, **values: float) -> None:
    for name, value in values.items():
        current = getattr(log, name)
        setattr(log, name, value if current is None else max(current, value))


def _parse_sglang_line(line: str, log: StartupLog) -> None:
    p, sg = _PATTERNS, log.sglang
    if m := p["sg_args"].search(line):
        log.engine = "sglang"
        args = m.group(1).rstrip()
        _config_pairs(args[:-1] if args.endswith(")") else args, log)
        log.model = log.settings.get("model_path") or log.model
    if m := p["sg_fraction"].search(line):  # ServerArgs (also when wrapped) or a debug print
        log.settings["mem_fraction_static"] = float(m.group(1))
    # Each rank logs its target model first; a speculative draft model loads (and logs) after it.
    if m := p["sg_before"].search(line):
        log.engine = "sglang"
        sg.setdefault("_before_by_rank", {}).setdefault(_sglang_rank(line), _f(m.group(1)))
    if g := _in_order(line, p["sg_after"]):
        log.engine = "sglang"
        sg.setdefault("_after_by_rank", {}).setdefault(_sglang_rank(line), (_f(g[0]), g[1]))
        if arch := p["sg_type"].search(line):
            sg.setdefault("architecture", arch.group(1))
    if (m := p["sg_alloc"].search(line)) and (m.group(1) or m.group(2) or m.group(4)):
        log.engine = "sglang"
        if m.group(1):
            sg.setdefault("tokens", _i(m.group(1)))
        if m.group(2):
            sg.setdefault("k_size_gib", _f(m.group(2)))
            sg.setdefault("v_size_gib", _f(m.group(3)))
        if m.group(4):
            sg.setdefault("kv_size_gib", _f(m.group(4)))
    if g := _in_order(line, p["sg_total"]):
        log.engine = "sglang"
        log.kv_cache_tokens = _i(g[0])
        sg["context_len"] = int(g[1])


_BRACKETED = re.compile(r"\[([^\[\]]*)\]")  # innermost `[...]`: scans of successive ones never overlap
_SG_GPU_TAG = re.compile(r"gpu(?:_id)?=[0-9]+")
_SG_RANK_UNIT_REVERSED = re.compile(r" ?[0-9]+[A-Z]{2}")  # "TP3 " read backwards


def _sglang_rank(line: str) -> str:
    """The rank a line comes from: "[... TP3]", "[... DP0 TP0 EP0]", "[... PP1 TP0]", 0.2's "[gpu=0]"; "" if none.

    The tags end the brackets, so they are read backwards from the `]`, one tag at a time: a pattern
    searching forwards for the run of tags is quadratic in a long run that does not reach the `]`."""
    for m in _BRACKETED.finditer(line):
        inner = m.group(1)
        if _SG_GPU_TAG.fullmatch(inner):
            return inner
        backwards, pos, start = inner[::-1], 0, None
        while unit := _SG_RANK_UNIT_REVERSED.match(backwards, pos):
            pos = unit.end()
            if pos == len(inner) or not (inner[-pos - 1].isalnum() or inner[-pos - 1] == "_"):
                start = len(inner) - pos  # a word boundary before the tag: the run may start here
        if start is not None:
            return inner[start:].strip()
    return ""


def _worker(line: str, value: float) -> WorkerFigure:
    for pattern in _RANK_PATTERNS:
        m = pattern.search(line)
        if not m:
            continue
        label = m.group(0).strip("()[]")
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
    util = log.settings.get("gpu_memory_utilization")
    if log.total_gpu_gib is None and log.requested_gib is not None and isinstance(util, float) and util > 0:
        log.total_gpu_gib = round(log.requested_gib / util, 2)  # "Requested memory: U (util), R GiB" is total x U
    peak = log.sglang.pop("_v0_peak_torch_gib", None)
    if peak is not None and log.weights_gib is not None and log.activation_gib is None:
        log.activation_gib = round(peak - log.weights_gib, 2)
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
        _resolve_sglang_ranks(sg, log)
        if "before_gib" not in sg and "after_gib" in sg and log.weights_gib is not None:
            sg["before_gib"] = sg["after_gib"] + log.weights_gib  # SGLang's "mem usage" is before - after
            sg["before_derived"] = True
        expected = {"model": log.model, "mem_fraction_static": log.settings.get("mem_fraction_static"),
                    "Load weight begin (avail mem)": log.sglang.get("before_gib"),
                    "Load weight end (avail mem)": log.sglang.get("after_gib"),
                    "KV Cache is allocated (#tokens)": log.sglang.get("tokens")}
        log.missing = [name for name, value in expected.items() if value is None]


def _resolve_sglang_ranks(sg: dict, log: StartupLog) -> None:
    """SGLang sizes the pool from the smallest free memory over the ranks, before and after loading."""
    before = sg.pop("_before_by_rank", {})
    after = sg.pop("_after_by_rank", {})
    if before:
        sg["before_gib"] = min(before.values())
    if after:
        sg["after_gib"] = min(free for free, _ in after.values())
        usage = [_f(u) for _, u in after.values() if u]
        if usage:
            log.weights_gib = max(usage)
    if "tokens" not in sg and log.kv_cache_tokens is not None:
        sg["tokens"] = log.kv_cache_tokens  # 0.4.1 printed the pool size only in "max_total_num_tokens="
