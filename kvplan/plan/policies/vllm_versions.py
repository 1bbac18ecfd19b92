"""Which vLLM release follows which rule: `--engine vllm@X` resolves X to one family of rules.

A family is named after its first release. Every rule below changed at a release named in
docs/engines.md with the vLLM pull request or log that shows it (scheduler defaults changed at
releases of their own: vllm_defaults.py reads `VllmRules.release`):

| family  | releases        | what changed at its first release                                                  |
|---------|-----------------|------------------------------------------------------------------------------------|
| v0      | < 0.8 (or V0)   | V0 engine: block manager, "# GPU blocks"                                           |
| 0.8.0   | 0.8.0 - 0.8.3   | V1 engine by default; no hybrid allocator; refusal gives no estimate               |
| 0.8.4   | 0.8.4 - 0.9.1   | the refusal reports the largest max_model_len that fits (PR 16168)                 |
| 0.9.2   | 0.9.2 - 0.10.0  | hybrid KV cache manager, group size = the smallest per-kind layer count; memory_profiling measures non-torch growth only (PR 19312) |
| 0.10.1  | 0.10.1 - 0.11.x | hybrid allocator off for chunked-local attention by default (PR 21761)             |
| 0.12    | 0.12 - 0.17     | chunked-local back in the hybrid allocator (PR 29627); group size = the largest count when under 1.25x the smallest (PR 29303) |
| 0.18    | 0.18 - 0.20.1   | 1.5x instead of 1.25x (PR 36684); the start-up check and max_model_len search count group padding (`_max_memory_usage_bytes_from_groups`) |
| 0.21    | 0.20.2 - 0.24   | CUDA-graph memory is estimated and subtracted before the KV budget (default); "GPU KV cache size" is int(max concurrency x max_model_len) |

A version newer than the newest kvplan models is refused (the rules of a release not yet read
would be a guess); source builds that report `0.1.devN` carry no release number and get the
newest family, said so in a note.
"""

import re
from dataclasses import dataclass

from ...errors import InputError

NEWEST_MODELLED = (0, 24)


@dataclass(frozen=True)
class VllmRules:
    family: str  # the label reports show, e.g. "0.12"
    release: tuple[int, int, int] | None  # the release asked for (scheduler defaults follow it, vllm_defaults.py);
    # None for "v0", no version, "latest" or a source build
    v1: bool = True
    hybrid_allocator: bool = True  # per-kind KV groups sharing one block pool
    chunked_local_hybrid: bool = True  # chunked-local layers keep only their chunk (else sized as full attention)
    refusal_estimates_max_len: bool = True  # "the estimated maximum model length is N"
    graphs_in_budget: bool = False  # the CUDA-graph estimate is subtracted before the KV budget
    memory_profiling: bool = True  # non-torch = growth during profiling (context and pre-load NCCL excluded)
    # hybrid groups: the largest per-kind layer count is the group size when under this many times the smallest
    # (None: always the smallest)
    hybrid_group_ratio: float | None = 1.25
    refusal_counts_group_padding: bool = False  # needed = group size x page x blocks per request, padding included
    tokens_from_concurrency: bool = False  # "GPU KV cache size" = int(max_concurrency x max_model_len)
    note: str = ""

    @property
    def concurrency_by_blocks(self) -> bool:
        """0.9.2+ log concurrency as blocks / blocks per request; earlier as tokens / max_model_len."""
        return self.hybrid_allocator


_FAMILIES = {
    "v0": dict(v1=False, hybrid_allocator=False, chunked_local_hybrid=False, refusal_estimates_max_len=False,
               memory_profiling=False, hybrid_group_ratio=None),
    "0.8.0": dict(hybrid_allocator=False, chunked_local_hybrid=False, refusal_estimates_max_len=False,
                  memory_profiling=False, hybrid_group_ratio=None),
    "0.8.4": dict(hybrid_allocator=False, chunked_local_hybrid=False, memory_profiling=False, hybrid_group_ratio=None),
    "0.9.2": dict(hybrid_group_ratio=None),
    "0.10.1": dict(chunked_local_hybrid=False, hybrid_group_ratio=None),
    "0.12": {},
    "0.18": dict(hybrid_group_ratio=1.5, refusal_counts_group_padding=True),
    "0.21": dict(hybrid_group_ratio=1.5, refusal_counts_group_padding=True, graphs_in_budget=True,
                 tokens_from_concurrency=True),
}
# 0.20.2 already follows the 0.21 rules: its official image logs "CUDA graph memory profiling is enabled" and a
# Gemma-4 "GPU KV cache size: 286,007 tokens" (odd: concurrency x max_model_len); docs/engines.md cites the log.
_STARTS = ((0, 8, 0), "0.8.0"), ((0, 8, 4), "0.8.4"), ((0, 9, 2), "0.9.2"), ((0, 10, 1), "0.10.1"), \
    ((0, 12, 0), "0.12"), ((0, 18, 0), "0.18"), ((0, 20, 2), "0.21")
NEWEST_FAMILY = "0.21"
FAMILIES = tuple(_FAMILIES)


def family_rules(family: str, release: tuple[int, int, int] | None = None, note: str = "") -> VllmRules:
    return VllmRules(family=family, release=release, note=note, **_FAMILIES[family])


def resolve_vllm_version(text: str | None) -> VllmRules:
    """`None` (no version given) is the newest family; "v0", "latest", "0.1.devN" and X.Y[.Z] are read."""
    if text is None:
        return family_rules(NEWEST_FAMILY)
    version = text.strip().lower().lstrip("v")
    if version == "0":
        return family_rules("v0")
    if version == "latest":
        return family_rules(NEWEST_FAMILY)
    if version.startswith("0.1.dev"):
        return family_rules(NEWEST_FAMILY, note=f"vLLM {text} is a source build without a release number: "
                                                f"kvplan applies its newest rules ({NEWEST_FAMILY})")
    if version in _FAMILIES:
        return family_rules(version, _release(version))
    parts = _release(version)
    if parts is None:
        raise InputError(f"--engine vllm@{text}: give a vLLM release such as 0.8.5, 0.10.1 or 0.19.0, or v0 (V0 engine)")
    if parts[:2] > NEWEST_MODELLED:
        newest = ".".join(map(str, NEWEST_MODELLED))
        raise InputError(f"--engine vllm@{text}: kvplan models vLLM up to {newest}; a newer release's rules are not "
                         f"known (use vllm@{newest} to apply the newest ones knowingly)")
    family = "v0"
    for start, name in _STARTS:
        if parts >= start:
            family = name
    return family_rules(family, parts)


def _release(text: str) -> tuple[int, int, int] | None:
    if not re.match(r"\d{1,9}\.\d{1,9}(?!\d)", text):  # a release number, not 5,000 digits for int()
        return None
    parts = tuple(int(p[:9]) for p in re.findall(r"\d+", text)[:3])
    return parts + (0,) * (3 - len(parts))
