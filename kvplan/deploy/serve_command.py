"""What a `vllm serve` command sets, as Deployment keyword arguments, and where a container's command
starts it.

`kvplan.deploy.vllm_args` reads the flags as vLLM would; this module is the one place that reading is
turned into kvplan settings, and the one place a container's words (`sh -c SCRIPT` included) are
searched for the `vllm serve` in them.
"""

import os
import re
import shlex
from dataclasses import dataclass

from ..errors import InputError
from .vllm_args import SHELL_OPERATORS, expand_variables, parse_vllm_argv, parse_vllm_command

_SHELLS = {"sh", "bash", "dash", "ash", "zsh"}


@dataclass(frozen=True)
class Settings:
    """What a `vllm serve` command line sets, as Deployment keyword arguments."""

    model: str | None
    kwargs: dict
    ignored: tuple[str, ...]  # flags that do not change memory, kept for the report


def settings_from_argv(argv: list[str]) -> Settings:
    """A `vllm serve` command as a token list, with or without `vllm serve` (or a shell) in front."""
    args = serve_args(argv)
    return _settings_of(parse_vllm_argv(argv if args is None else args))


def settings_from_command(text: str) -> Settings:
    """A `vllm serve` command line or shell script, as written."""
    return _settings_of(parse_vllm_command(text))


def _settings_of(parsed) -> Settings:
    from ..dtypes import KV_DTYPE_ALIASES, kv_format, weight_format
    from ..units import parse_count, parse_size

    flags = parsed.estimate_flags()
    kwargs: dict = {}
    for flag, kwarg in (("tp", "tp"), ("pp", "pp"), ("block_size", "block_size"), ("max_num_seqs", "max_num_seqs"),
                        ("max_num_batched_tokens", "max_num_batched_tokens"),
                        ("gpu_memory_utilization", "gpu_memory_utilization")):
        if flag in flags:
            kwargs[kwarg] = flags[flag]
    if "max_model_len" in flags:
        kwargs["max_model_len"] = parse_count(flags["max_model_len"], "--max-model-len")
    if "kv_cache_memory" in flags:
        kwargs["kv_cache_memory_bytes"] = parse_size(flags["kv_cache_memory"], "--kv-cache-memory-bytes")
    if "kv_dtype" in flags:
        name = str(flags["kv_dtype"]).lower()
        kv_format(name)  # refuses an unknown one
        kwargs["kv_dtype"] = KV_DTYPE_ALIASES.get(name, name)
    if "dtype" in flags:
        kwargs["weight_dtype"] = weight_format(flags["dtype"]).name
    return Settings(flags.get("model"), kwargs, tuple(parsed.ignored))


def serve_args(argv: list[str], env: dict[str, str] | None = None) -> list[str] | None:
    """The arguments after `vllm serve` (or the OpenAI server module) in a command, else None.

    `sh -c SCRIPT` (also `bash -lc`, `sh -ec`, ...) is split as a shell would: comments dropped,
    line continuations joined, `;`/`&&`/`|` separated, `$VAR`/`${VAR}` from the container's env."""
    script = _shell_script(argv)
    if script is not None:
        try:
            return serve_args(_shell_words(script, env or {}))
        except ValueError as exc:
            raise InputError(f"cannot split the shell command ({exc})") from None
    for i, arg in enumerate(argv[:-1]):
        if (os.path.basename(arg) == "vllm" and argv[i + 1] == "serve") or \
                (arg == "-m" and argv[i + 1] == "vllm.entrypoints.openai.api_server"):
            rest = argv[i + 2:]
            cut = next((j for j, a in enumerate(rest) if a in SHELL_OPERATORS), len(rest))
            return rest[:cut]
    return None


def is_vllm_server_image(image: str) -> bool:
    """The official server image (`vllm/vllm-openai[:tag|@digest]`, any registry), whose entrypoint
    is `vllm serve`; other images merely named after vLLM (routers, operators) are not."""
    name = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]  # drop digest, registry/path and tag
    return name == "vllm-openai"


def _shell_script(argv: list[str]) -> str | None:
    if len(argv) < 3 or os.path.basename(argv[0]) not in _SHELLS:
        return None
    for i, arg in enumerate(argv[1:-1], 1):
        if re.fullmatch(r"-[a-z]*c[a-z]*", arg):  # -c, -lc, -ec, -euc ...
            return argv[i + 1]
    return None


def _shell_words(script: str, env: dict[str, str]) -> list[str]:
    script = script.replace("\\\n", " ")
    script = expand_variables(script, env, "shell command")
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)
