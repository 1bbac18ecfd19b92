"""What vLLM V1 subtracts from `total x gpu_memory_utilization` besides the weights, per GPU.

vLLM (0.9.2+, vllm/utils memory_profiling) runs one dummy forward of max_num_batched_tokens
tokens and one dummy sampler step of min(max_num_seqs, max_num_batched_tokens) rows, then logs
(DEBUG) "torch peak memory increase", "non-torch forward increase memory" and "weights memory":

- activation peak = max(forward, sampler). The forward holds the MLP's gate/up output and its
  activation (3 x intermediate per rank) next to a few hidden-size buffers; the sampler holds
  the logits of every row over the whole vocabulary (gathered on every rank, so not divided by
  tp) in fp32 copies, sorted values and int64 indices for top-k/top-p: SAMPLER_FP32_BYTES per
  logit plus the logits' own compute-dtype bytes. On the 0.19 logs the sampler dominates for
  vocabularies above ~50K at the `vllm serve` default of 1024 sequences.
- non-torch = what grows outside torch during profiling (cuBLAS workspaces; with tp > 1 the
  all-reduce buffers). The CUDA context created before loading is not counted: it lies in the
  (1 - utilization) headroom.
- rotary caches and vision encoders load with the model (vllm_load_extras.py).
- CUDA graphs: captured after the KV cache is allocated up to 0.20 (they use the headroom); from
  0.21 their estimate is subtracted first. `capture_model` (vllm/v1/worker/gpu_model_runner.py)
  captures PIECEWISE graphs for every capture size and, with FULL_AND_PIECEWISE (the default from
  0.11), FULL decode graphs only for sizes <= max_num_seqs x uniform_decode_query_len (1 without
  speculative decoding): at 256 sequences 51 + 35 graphs, logged "PIECEWISE=51 (largest=512),
  FULL=35 (largest=256)"; at 1,024 sequences 51 + 51.

The constants are fitted on published logs (docs/benchmarks/vllm_logs.md: fitted on a stated subset,
checked on the rest); versions without logs reuse the 0.19 figures, and their basis says so.
"""

from ...model import ModelSpec
from ...units import MiB
from ..deployment import Deployment
from ..overhead import Term, activation_peak_bytes
from .vllm_load_extras import load_extra_terms
from .vllm_versions import VllmRules

SAMPLER_FP32_BYTES = 13.4  # per logit, besides the compute-dtype logits (fitted on the 0.19 FIT logs: 13.42)
# Non-torch growth during profiling, (bytes, the release whose logs show it): cuBLAS/cuDNN workspaces on every
# rank (0.24-0.26 GiB in every 0.19 tp=1 log) and, with tp > 1, the tensor-parallel all-reduce workspace.
# Releases other than the measured one reuse its figure, and the term's basis says "assumed".
_LOGS_0_19, _LOG_0_11 = ((0, 19), "the vLLM 0.19 logs"), ((0, 11), "one vLLM 0.11.1 log (tp=4)")
NON_TORCH_WORKSPACE = (256 * MiB, _LOGS_0_19)
NON_TORCH_TP = {"0.9.2": (96 * MiB, _LOG_0_11), "0.10.1": (96 * MiB, _LOG_0_11),  # 0.09 GiB
                "0.12": (2150 * MiB, _LOGS_0_19), "0.18": (2150 * MiB, _LOGS_0_19),  # 2.07-2.17 GiB at tp 2 and 4
                "0.21": (2150 * MiB, _LOGS_0_19)}
# vLLM <= 0.9.1 counted every non-torch byte on the device, the CUDA context included.
NON_TORCH_BEFORE_PROFILING_BYTES = {False: 768 * MiB, True: 1280 * MiB}  # {multi_gpu: bytes}, not checked on logs
# One captured graph keeps per-layer buffers: fitted on the 0.19 FIT logs' "Estimated CUDA graph memory" lines
# (held out: -48% to +40%, docs/benchmarks/vllm_logs.md).
CUDA_GRAPH_BYTES_PER_LAYER_GRAPH = 243 * 1024
CAPTURE_SIZES_MAX = 512
# Models whose vLLM config raises the largest capture size: gpt-oss to 1024 ("This will increase the number of
# CUDA graphs from 67 to 83", GptOssForCausalLMConfig in vllm/model_executor/models/config.py).
CAPTURE_SIZES_MAX_BY_MODEL_TYPE = {"gpt_oss": 1024}
UNIFORM_DECODE_QUERY_LEN = 1  # tokens per request in a decode step without speculative decoding


def capture_sizes_max(config: dict | None) -> int:
    return CAPTURE_SIZES_MAX_BY_MODEL_TYPE.get(str((config or {}).get("model_type")), CAPTURE_SIZES_MAX)


def cudagraph_capture_sizes(max_num_seqs: int, config: dict | None = None) -> list[int]:
    """vLLM's default capture list: 1, 2, 4, then every 8 to 255, then every 16, up to min(2 x seqs, 512 or the
    model's own limit)."""
    largest = min(2 * max_num_seqs, capture_sizes_max(config))
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, largest + 1, 16))
    return [s for s in sizes if s <= largest]


def sampler_peak_bytes(spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> int | None:
    if not spec.vocab_size:
        return None
    rows = min(dep.max_num_seqs, dep.max_num_batched_tokens)
    return int(rows * spec.vocab_size * (SAMPLER_FP32_BYTES + act_elem_bytes))


def forward_peak_bytes(spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> int | None:
    if not spec.hidden_size:
        return None
    inter = (spec.mlp_width_per_token or 4 * spec.hidden_size) // dep.tp
    return dep.max_num_batched_tokens * (3 * inter + 4 * spec.hidden_size) * act_elem_bytes


def cuda_graph_count(spec: ModelSpec, dep: Deployment, config: dict | None = None) -> int:
    """PIECEWISE graphs for every capture size, FULL decode graphs for those up to max_num_seqs decode tokens;
    chunked-local attention supports PIECEWISE only."""
    sizes = cudagraph_capture_sizes(dep.max_num_seqs, config)
    if any(g.vllm_chunked_local for g in spec.kv_groups()):
        return len(sizes)
    return len(sizes) + sum(s <= dep.max_num_seqs * UNIFORM_DECODE_QUERY_LEN for s in sizes)


def cuda_graph_bytes(spec: ModelSpec, dep: Deployment, config: dict | None = None) -> int:
    layers = -(-spec.num_layers // dep.pp)
    return CUDA_GRAPH_BYTES_PER_LAYER_GRAPH * layers * cuda_graph_count(spec, dep, config)


def vllm_overhead_terms(spec: ModelSpec, config: dict | None, dep: Deployment, act_elem_bytes: int,
                        rules: VllmRules) -> list[Term]:
    """The terms vLLM `rules.family` subtracts, each with its basis; user overrides win."""
    if dep.overhead_bytes is not None:
        return [Term("overhead (user)", dep.overhead_bytes, "--overhead")]
    return [_activation(spec, dep, act_elem_bytes, rules), _non_torch(dep, rules), _graphs(spec, config, dep, rules),
            *load_extra_terms(spec, config, dep, act_elem_bytes)]


def _activation(spec, dep, act_elem_bytes, rules) -> Term:
    if dep.activation_bytes is not None:
        return Term("activation peak", dep.activation_bytes, "--activation-memory")
    if not rules.v1:
        peak = activation_peak_bytes(spec, dep, act_elem_bytes)
        return Term("activation peak", peak, f"model: V0 prefill of {dep.max_num_batched_tokens} tokens"
                    if peak is not None else "unknown without hidden/heads/vocab (give --overhead)")
    forward, sampler = forward_peak_bytes(spec, dep, act_elem_bytes), sampler_peak_bytes(spec, dep, act_elem_bytes)
    if forward is None or sampler is None:
        return Term("activation peak", None, "unknown without hidden size and vocabulary (give --activation-memory)")
    rows = min(dep.max_num_seqs, dep.max_num_batched_tokens)
    if sampler >= forward:
        basis = f"sampler of {rows} rows x {spec.vocab_size:,} logits x {SAMPLER_FP32_BYTES + act_elem_bytes:g} B"
    else:
        basis = f"forward of {dep.max_num_batched_tokens} tokens (MLP intermediate and hidden buffers)"
    return Term("activation peak", max(forward, sampler), basis)


def _non_torch(dep, rules) -> Term:
    """Keyed on tp > 1: the all-reduce workspace is tensor-parallel; pipeline stages alone add none."""
    if dep.non_torch_bytes is not None:
        return Term("non-torch (CUDA/NCCL)", dep.non_torch_bytes, "--non-torch-memory")
    multi = dep.num_gpus > 1
    if not rules.memory_profiling:
        return Term("non-torch (CUDA/NCCL)", NON_TORCH_BEFORE_PROFILING_BYTES[multi],
                    f"vLLM {rules.family}: CUDA context + workspaces" + (" + NCCL" if multi else "")
                    + " (not checked against logs)")
    size, (release, source) = NON_TORCH_TP[rules.family] if dep.tp > 1 else NON_TORCH_WORKSPACE
    what = "workspaces and the tp all-reduce buffers" if dep.tp > 1 else "workspaces growing during profiling"
    measured = rules.release is not None and rules.release[:2] == release and not (dep.tp == 1 and dep.pp > 1)
    if dep.tp == 1 and dep.pp > 1:
        what += "; pipeline stages without tp add no all-reduce workspace (no pp-only log)"
    return Term("non-torch (CUDA/NCCL)", size, f"{'measured on' if measured else 'assumed from'} {source}: {what}")


def _graphs(spec, config, dep, rules) -> Term:
    if dep.cuda_graph_bytes is not None:
        return Term("CUDA graphs", dep.cuda_graph_bytes if rules.graphs_in_budget else 0,
                    "--cuda-graph-memory" if rules.graphs_in_budget else
                    f"--cuda-graph-memory ignored: vLLM {rules.family} captures graphs after sizing the KV cache")
    if not rules.graphs_in_budget:
        return Term("CUDA graphs", 0, f"vLLM {rules.family} captures graphs after sizing the KV cache "
                                      "(they use the 1 - utilization headroom)")
    graphs = cuda_graph_count(spec, dep, config)
    return Term("CUDA graphs", cuda_graph_bytes(spec, dep, config), f"estimate subtracted from 0.20.2 (family 0.21): {graphs} graphs x "
                f"{-(-spec.num_layers // dep.pp)} layers x {CUDA_GRAPH_BYTES_PER_LAYER_GRAPH // 1024} KiB "
                "(fitted on 0.19 logs; held-out error up to 48%)")

