"""Read a `vllm serve` command line (or a shell script, a container's args) into kvplan settings.

API:
- `parse_vllm_command(text) -> VllmServeArgs`: a command line or a whole shell script. Handles
  `\\` line continuations, comments, `NAME=value` prefixes and script assignments (`$NAME` /
  `${NAME}` expanded from them), `vllm serve MODEL ...`, `python -m vllm.entrypoints.openai.api_server
  --model MODEL ...`, `docker run ... vllm/vllm-openai[:tag] ARGS`, or bare flags (`--tp 2 ...`).
- `parse_vllm_argv(tokens) -> VllmServeArgs`: an already split argument list (Kubernetes `args:`,
  docker-compose `command:`), with or without the leading `vllm serve`.
- `read_vllm_command_file(path)`: `parse_vllm_command` on a file's text, with a clear error.
- `VllmServeArgs.estimate_flags() -> dict`: the values keyed by `kvplan estimate` parameter names
  (`tp`, `pp`, `max_model_len`, `gpu_memory_utilization`, `kv_dtype`, `block_size`, `max_num_seqs`,
  `max_num_batched_tokens`, `kv_cache_memory`, `dtype`, `model`), ready for `deployment_from_flags`.

Read flags: the model (positional or `--model`), `--tensor-parallel-size/-tp`,
`--pipeline-parallel-size/-pp`, `--max-model-len`, `--gpu-memory-utilization`, `--kv-cache-dtype`,
`--block-size`, `--max-num-seqs`, `--max-num-batched-tokens`, `--kv-cache-memory-bytes`, `--dtype`,
`--quantization/-q`. `--flag=value`, `--flag value` and underscore spellings are accepted. Numbers
follow vLLM's suffix rule: lower-case k/m/g are powers of 1000, upper-case K/M/G powers of 1024.
Every other flag is kept in `ignored`, so a caller can say it was read but has no effect on KV sizing.
"""

import re
import shlex
from dataclasses import dataclass, field

from ..errors import InputError
from ..inputs import SERVE_SCRIPT, check_command, expand, read_text

# Flags that take no value (so the next token is not swallowed as one); others take exactly one.
_BOOLEAN_FLAGS = {
    "--trust-remote-code", "--enforce-eager", "--enable-prefix-caching", "--no-enable-prefix-caching",
    "--enable-chunked-prefill", "--no-enable-chunked-prefill", "--disable-log-requests", "--disable-log-stats",
    "--enable-auto-tool-choice", "--enable-expert-parallel", "--disable-custom-all-reduce", "--enable-lora",
    "--disable-sliding-window", "--disable-hybrid-kv-cache-manager", "--enable-reasoning", "--skip-tokenizer-init",
    "--disable-frontend-multiprocessing", "--enable-prompt-tokens-details", "--enable-server-load-tracking",
    "--disable-fastapi-docs", "--enable-log-requests", "--async-scheduling", "--no-async-scheduling",
    "--enable-sleep-mode", "--headless", "--enable-dbo", "--enable-eplb", "--disable-uvicorn-access-log",
    "--enable-force-include-usage", "--enable-request-id-headers", "--enable-log-outputs", "--return-tokens-as-token-ids",
}
_ALIASES = {
    "-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size", "-q": "--quantization",
    "-dp": "--data-parallel-size", "-O": "--compilation-config",
}
_READ = {
    "--model": "model", "--tensor-parallel-size": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size", "--max-model-len": "max_model_len",
    "--gpu-memory-utilization": "gpu_memory_utilization", "--kv-cache-dtype": "kv_cache_dtype",
    "--block-size": "block_size", "--max-num-seqs": "max_num_seqs",
    "--max-num-batched-tokens": "max_num_batched_tokens", "--kv-cache-memory-bytes": "kv_cache_memory_bytes",
    "--kv-cache-memory": "kv_cache_memory_bytes", "--dtype": "dtype", "--quantization": "quantization",
}
_INT_FIELDS = ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len", "block_size", "max_num_seqs",
               "max_num_batched_tokens", "kv_cache_memory_bytes")
_DTYPES = {"auto": None, "half": "fp16", "float16": "fp16", "bfloat16": "bf16", "float": "fp32", "float32": "fp32"}
_QUANTIZATIONS = {
    "awq": "awq", "awq_marlin": "awq", "gptq": "gptq", "gptq_marlin": "gptq", "fp8": "fp8", "mxfp4": "mxfp4",
    "modelopt_fp4": "nvfp4", "nvfp4": "nvfp4", "compressed-tensors": None, "bitsandbytes": "int4", "int8": "int8",
}
_KV_DTYPES = {"auto": "auto", "fp8": "fp8", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2", "fp8_inc": "fp8",
              "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16"}
_LAUNCHERS = ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.api_server")
_ASSIGN = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class VllmServeArgs:
    """The KV-relevant settings of one `vllm serve` invocation, as vLLM would read them (None = not given)."""

    model: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_dtype: str | None = None
    block_size: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_memory_bytes: int | None = None
    dtype: str | None = None
    quantization: str | None = None
    env: dict = field(default_factory=dict)  # NAME=value prefixes of the command
    ignored: tuple[str, ...] = ()  # flags read but without effect on KV sizing, as written

    def estimate_flags(self) -> dict:
        """Values under `kvplan estimate` parameter names; only what the command set."""
        out: dict = {}
        pairs = (("model", self.model), ("tp", self.tensor_parallel_size), ("pp", self.pipeline_parallel_size),
                 ("max_model_len", None if self.max_model_len is None else str(self.max_model_len)),
                 ("gpu_memory_utilization", self.gpu_memory_utilization), ("block_size", self.block_size),
                 ("max_num_seqs", self.max_num_seqs), ("max_num_batched_tokens", self.max_num_batched_tokens),
                 ("kv_cache_memory", None if self.kv_cache_memory_bytes is None else str(self.kv_cache_memory_bytes)))
        out.update({k: v for k, v in pairs if v is not None})
        if self.kv_cache_dtype is not None:
            out["kv_dtype"] = _KV_DTYPES.get(self.kv_cache_dtype, self.kv_cache_dtype)
        weight = _QUANTIZATIONS.get(self.quantization) if self.quantization else None
        if weight is None and self.dtype is not None:
            weight = _DTYPES.get(self.dtype, self.dtype)
        if weight is not None:
            out["dtype"] = weight
        return out

    def notes(self) -> list[str]:
        """One line each for what was ignored or could not be mapped."""
        notes = []
        if self.ignored:
            notes.append("vllm args without effect on KV sizing, ignored: " + " ".join(self.ignored))
        if self.quantization and self.quantization not in _QUANTIZATIONS:
            notes.append(f"--quantization {self.quantization}: unknown to kvplan, weights sized from the checkpoint")
        elif self.quantization and _QUANTIZATIONS[self.quantization] is None:
            notes.append(f"--quantization {self.quantization}: format read from the checkpoint's own config")
        return notes


def parse_vllm_command(text: str) -> VllmServeArgs:
    """A `vllm serve` command line, or the first such command in a shell script."""
    joined = re.sub(r"\\\r?\n", " ", text)
    variables: dict[str, str] = {}
    for raw_line in joined.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if m := _ASSIGN.match(line):
            if " " not in m.group(2).strip() or m.group(2).strip()[:1] in "'\"":
                variables[m.group(1)] = _unquote(expand_variables(m.group(2).strip(), variables))
                continue
        try:
            tokens = shlex.split(check_command(expand_variables(line, variables), "vllm command"), comments=True)
        except ValueError as exc:
            raise InputError(f"vllm command: cannot split {line[:60]!r} ({exc})") from None
        for command in _commands(tokens):
            start = _vllm_start(command)
            if start is not None:
                return parse_vllm_argv(command[start:], env=_env_prefix(command[:start]))
    raise InputError("no `vllm serve` command found (expected `vllm serve MODEL ...`, "
                     "`python -m vllm.entrypoints.openai.api_server ...` or flags starting with --)")


def read_vllm_command_file(path: str) -> VllmServeArgs:
    return parse_vllm_command(read_text(path, SERVE_SCRIPT))


def parse_vllm_argv(tokens: list[str], env: dict | None = None) -> VllmServeArgs:
    """Arguments after `vllm serve` (a leading `vllm serve` is skipped if present)."""
    tokens = list(tokens)
    if tokens[:2] == ["vllm", "serve"]:
        tokens = tokens[2:]
    values: dict = {}
    ignored: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-"):
            if "model" not in values:
                values["model"] = token
            else:
                ignored.append(token)
            i += 1
            continue
        flag, eq, inline = token.partition("=")
        flag = _ALIASES.get(flag, flag)
        if flag.startswith("--"):
            flag = "--" + flag[2:].replace("_", "-")
        if flag in _BOOLEAN_FLAGS:
            ignored.append(token)
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(tokens) and not _looks_like_flag(tokens[i + 1]):
            value, i = tokens[i + 1], i + 2
        else:
            ignored.append(token)  # a switch kvplan does not know
            i += 1
            continue
        if flag in _READ:
            values[_READ[flag]] = value
        else:
            ignored.append(f"{flag} {value}")
    return VllmServeArgs(**_typed(values), env=dict(env or {}), ignored=tuple(ignored))


def vllm_number(text: str, flag: str) -> int:
    """vLLM's human-readable integers: 1k = 1000, 1K = 1024 (same for m/M, g/G)."""
    s = str(text).strip().replace("_", "")
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kKmMgGtT]?)", s)
    if not m:
        raise InputError(f"vllm {flag}: cannot read {text!r} as an integer")
    number, suffix = float(m.group(1)), m.group(2)
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
             "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[suffix]
    value = number * scale
    if not value < 2**63:  # float() of hundreds of digits is inf; no vLLM integer comes near this
        shown = f"{text[:40]!r}..." if len(str(text)) > 40 else repr(text)
        raise InputError(f"vllm {flag}: {shown} is too large for an integer setting")
    if value != int(value):
        raise InputError(f"vllm {flag}: {text!r} is not a whole number")
    return int(value)


def _typed(values: dict) -> dict:
    out = dict(values)
    for name in _INT_FIELDS:
        if name in out:
            out[name] = vllm_number(out[name], "--" + name.replace("_", "-"))
    if "gpu_memory_utilization" in out:
        try:
            out["gpu_memory_utilization"] = float(out["gpu_memory_utilization"])
        except ValueError:
            raise InputError(f"vllm --gpu-memory-utilization: {values['gpu_memory_utilization']!r} is not a number") from None
    for name in ("kv_cache_dtype", "dtype", "quantization"):
        if name in out:
            out[name] = str(out[name]).strip().lower()
    return out


def _looks_like_flag(token: str) -> bool:
    return token.startswith("-") and not re.fullmatch(r"-[0-9.]+", token)


def _commands(tokens: list[str]) -> list[list[str]]:
    """Split a token list on shell command separators."""
    commands, current = [], []
    for token in tokens:
        if token in SHELL_OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def _vllm_start(command: list[str]) -> int | None:
    """Index of the first argument vLLM itself parses, or None when this is not a vLLM command."""
    for i, token in enumerate(command):
        base = token.rsplit("/", 1)[-1]
        if base == "vllm" and i + 1 < len(command) and command[i + 1] == "serve":
            return i + 2
        if token in _LAUNCHERS:
            return i + 1
        if re.match(r"^(?:[\w.-]+/)*vllm/vllm-openai(?::[\w.-]+)?$", token):
            return i + 1
    if command and command[0].startswith("--"):
        return 0
    return None


def _env_prefix(tokens: list[str]) -> dict:
    env = {}
    for token in tokens:
        if m := _ASSIGN.match(token):
            env[m.group(1)] = m.group(2)
    return env


def expand_variables(text: str, variables: dict, where: str = "vllm command") -> str:
    """`$NAME` and `${NAME}` from `variables`, bounded like a command line; unknown names stay as written."""
    return expand(_VARIABLE, lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text, where)


def _unquote(text: str) -> str:
    try:
        parts = shlex.split(text)
    except ValueError:
        return text
    return parts[0] if len(parts) == 1 else text
