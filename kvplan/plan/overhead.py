"""Memory a serving process needs besides weights and KV, per GPU, as named terms.

Each term is a model with a stated basis, shown in the report and overridable from the CLI.
`kvplan profile` measures the same terms on a real device.
"""

from dataclasses import dataclass

from ..model import ModelSpec
from ..units import MiB
from .deployment import Deployment

# Non-torch memory inside vLLM's budget (CUDA context growth after init, cuBLAS workspaces);
# collective buffers add to it when tensor/pipeline parallel ranks talk (NCCL).
NON_TORCH_BYTES_SINGLE_GPU = 256 * MiB
NON_TORCH_BYTES_MULTI_GPU = 1024 * MiB
SAMPLER_LOGIT_BYTES = 4  # logits are upcast to fp32 for sampling


@dataclass(frozen=True)
class Term:
    name: str
    bytes: int | None
    basis: str  # how it was obtained: model formula, user override, measured


def activation_peak_bytes(spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> int | None:
    """Peak of a dummy prefill of `max_num_batched_tokens` tokens, per GPU.

    The MLP dominates: gate+up output (2 x intermediate) and its activation (1 x intermediate)
    live together, next to a few hidden-size buffers (residual, norm output, attention output)
    and the q/k/v projections (k and v for the KV heads only); plus fp32 logits for
    `max_num_seqs` sampled rows.
    """
    if not spec.hidden_size or not spec.vocab_size or not spec.num_attention_heads:
        return None
    tokens = dep.max_num_batched_tokens
    inter = _intermediate_per_token(spec) // dep.tp
    qkv = _qkv_width(spec) // dep.tp
    per_token = 3 * inter + 4 * spec.hidden_size + qkv
    logits = min(dep.max_num_seqs, tokens) * spec.vocab_size * SAMPLER_LOGIT_BYTES // dep.tp
    return tokens * per_token * act_elem_bytes + logits


def _intermediate_per_token(spec: ModelSpec) -> int:
    return spec.mlp_width_per_token or 4 * spec.hidden_size


def _qkv_width(spec: ModelSpec) -> int:
    """q for every query head, k and v for the KV heads only (GQA/MQA project fewer)."""
    heads = spec.num_attention_heads or 0
    head_dim = spec.head_dim or (spec.hidden_size // heads if heads else 0)
    kv_heads = next((g.num_kv_heads for g in spec.kv_groups() if hasattr(g, "num_kv_heads")), heads)
    return (heads + 2 * kv_heads) * head_dim


def overhead_terms(spec: ModelSpec, dep: Deployment, act_elem_bytes: int) -> list[Term]:
    if dep.overhead_bytes is not None:
        return [Term("overhead (user)", dep.overhead_bytes, "--overhead")]
    if dep.activation_bytes is not None:
        activation = Term("activation peak", dep.activation_bytes, "--activation-memory")
    else:
        peak = activation_peak_bytes(spec, dep, act_elem_bytes)
        activation = Term("activation peak", peak,
                          f"model: prefill of {dep.max_num_batched_tokens} tokens" if peak is not None
                          else "unknown without hidden/heads/vocab (give --overhead)")
    if dep.non_torch_bytes is not None:
        non_torch = Term("non-torch (CUDA/NCCL)", dep.non_torch_bytes, "--non-torch-memory")
    else:
        multi = dep.num_gpus > 1
        non_torch = Term("non-torch (CUDA/NCCL)", NON_TORCH_BYTES_MULTI_GPU if multi else NON_TORCH_BYTES_SINGLE_GPU,
                         "model: " + ("NCCL buffers, tp*pp>1" if multi else "single GPU"))
    graphs = Term("CUDA graphs", dep.cuda_graph_bytes or 0,
                  "--cuda-graph-memory" if dep.cuda_graph_bytes is not None else "not counted (set --cuda-graph-memory)")
    return [activation, non_torch, graphs]
