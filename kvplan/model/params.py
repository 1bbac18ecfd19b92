"""Parameter counts from config shapes, split by how a quantized checkpoint stores them.

Exact for the families kvplan knows (Llama-like dense, Qwen2/3, Gemma 2/3, Mixtral, Qwen3-MoE,
gpt-oss, DeepSeek V2/V3 MLA+MoE and DeepSeek-MoE, Qwen3-Next, Falcon, MiniMax-Text-01/M1);
`None` for others, so weights are never guessed (introspection counts those when transformers
is installed: kvplan.model.paths).
"""

from dataclasses import dataclass

from .kinds import LayerGroup
from .spec import ParamCount

# Families whose module shapes kvplan reproduces exactly (checked against official totals).
COUNTED_FAMILIES = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next",
    "gemma", "gemma2", "gemma3_text", "gpt_oss", "deepseek_v2", "deepseek_v3", "kimi_k2",
    "granite", "olmo2", "phi3", "deepseek", "falcon", "RefinedWeb", "RefinedWebModel", "minimax", "minimax_m1",
    "minimax_text_01",
}
_FALCON = {"falcon", "RefinedWeb", "RefinedWebModel"}
LIGHTNING_FAMILIES = {"minimax", "minimax_m1", "minimax_text_01"}  # linear layers: MiniMax lightning attention
_QKV_BIAS = {"qwen2", "qwen2_moe"}
_QK_NORM = {"qwen3", "qwen3_moe", "gemma3_text", "qwen3_next", "olmo2"}
_FOUR_NORMS = {"gemma2", "gemma3_text"}


@dataclass
class _Tally:
    linear: int = 0
    experts: int = 0
    other: int = 0
    experts_active: int = 0
    expert_biases: int = 0  # in `other`; only top_k experts' share is active
    expert_biases_active: int = 0


class _Uncountable(Exception):
    """A field the count needs is missing or not a non-negative integer."""


class _IntFields(dict):
    """Config view whose lookups return validated ints (or lists/bools/None) or raise _Uncountable."""

    def __getitem__(self, key):
        value = dict.get(self, key)
        if key == "model_type":
            return value
        if value is None or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _Uncountable(key)
        return value

    def get(self, key, default=None):
        value = dict.get(self, key, default)
        if value is None or isinstance(value, (bool, list, str)):
            return value if value is not None else default
        if not isinstance(value, int) or value < 0:
            raise _Uncountable(key)
        return value


def count_params(cfg: dict, layer_kinds: list[LayerGroup]) -> ParamCount | None:
    """`cfg` is the normalized text config (aliases resolved); `layer_kinds` the group of each layer.

    None when the family is not one kvplan counts exactly or a needed field is missing/invalid:
    weights are then left out of the estimate rather than guessed."""
    if cfg.get("model_type") not in COUNTED_FAMILIES:
        return None
    try:
        return _count(_IntFields(cfg), layer_kinds)
    except _Uncountable:
        return None


def _count(cfg: dict, layer_kinds: list[LayerGroup]) -> ParamCount | None:
    model_type = cfg.get("model_type")
    h = cfg["hidden_size"]
    vocab = cfg["vocab_size"]
    total = _Tally()
    blocks = _AttentionBlocks(cfg, total)
    for i, kind in enumerate(layer_kinds):
        kind.count_attention_params(blocks)  # the kind picks its attention block's shape
        if model_type in _FALCON:
            _falcon_layer(cfg, total)
        else:
            _mlp(cfg, i, total)
            total.other += (4 if model_type in _FOUR_NORMS else 2) * h
    total.other += 2 * h if model_type in _FALCON else h  # final norm (Falcon's LayerNorm has a bias)
    embedding = vocab * h
    lm_head = 0 if cfg.get("tie_word_embeddings") else vocab * h
    active = None
    if total.experts:
        active = (total.linear + total.experts_active + embedding + lm_head + total.other
                  - total.expert_biases + total.expert_biases_active)
    return ParamCount(linear=total.linear, experts=total.experts, embedding=embedding, lm_head=lm_head,
                      other=total.other, active=active)


class _AttentionBlocks:
    """The attention-block shapes kvplan counts; each kind calls the one its layers have."""

    def __init__(self, cfg: dict, tally: _Tally):
        self.cfg, self.tally = cfg, tally

    def qkvo(self) -> None:
        _attention(self.cfg, self.tally)

    def mla(self) -> None:
        _mla_attention(self.cfg, self.tally)

    def recurrent(self) -> None:
        model_type = self.cfg["model_type"]
        if model_type in LIGHTNING_FAMILIES:
            _lightning_attention(self.cfg, self.tally)
        elif model_type == "qwen3_next":
            _gated_deltanet(self.cfg, self.tally)
        else:  # the recurrent blocks counted: MiniMax lightning attention and Qwen3-Next's gated DeltaNet
            raise _Uncountable("recurrent block")

    def unknown(self, kind: LayerGroup) -> None:
        raise _Uncountable(kind.kind)


def _attention(cfg: dict, t: _Tally) -> None:
    h, heads, kv_heads, head_dim = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    model_type = cfg["model_type"]
    q_out = heads * head_dim * (2 if model_type == "qwen3_next" else 1)  # Qwen3-Next: query + output gate
    t.linear += h * q_out + 2 * h * kv_heads * head_dim + heads * head_dim * h
    if model_type in _QKV_BIAS:
        t.other += q_out + 2 * kv_heads * head_dim
    elif cfg.get("attention_bias"):
        t.other += q_out + 2 * kv_heads * head_dim + h
    if model_type in _QK_NORM:
        t.other += (2 * head_dim) if model_type != "olmo2" else (heads + kv_heads) * head_dim
    if model_type == "gpt_oss":
        t.other += heads  # learned attention sinks


def _mla_attention(cfg: dict, t: _Tally) -> None:
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    rank, rope, nope, v_dim = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    q_lora = cfg.get("q_lora_rank")
    qk_dim = nope + rope
    if q_lora:
        t.linear += h * q_lora + q_lora * heads * qk_dim
        t.other += q_lora  # q_a_layernorm
    else:
        t.linear += h * heads * qk_dim
    t.linear += h * (rank + rope) + rank * heads * (nope + v_dim) + heads * v_dim * h
    t.other += rank  # kv_a_layernorm


def _gated_deltanet(cfg: dict, t: _Tally) -> None:
    h = cfg["hidden_size"]
    k_heads, k_dim = cfg["linear_num_key_heads"], cfg["linear_key_head_dim"]
    v_heads, v_dim = cfg["linear_num_value_heads"], cfg["linear_value_head_dim"]
    key_dim, value_dim = k_heads * k_dim, v_heads * v_dim
    conv_dim = 2 * key_dim + value_dim
    t.linear += h * (2 * key_dim + 2 * value_dim) + h * 2 * v_heads + value_dim * h
    t.other += conv_dim * cfg["linear_conv_kernel_dim"] + 2 * v_heads + v_dim


def _lightning_attention(cfg: dict, t: _Tally) -> None:
    """MiniMax lightning attention: fused q/k/v, an output gate, out_proj, and a norm over all heads."""
    h, inner = cfg["hidden_size"], cfg["num_attention_heads"] * cfg["head_dim"]
    t.linear += h * 3 * inner + h * inner + inner * h
    t.other += inner


def _falcon_layer(cfg: dict, t: _Tally) -> None:
    """Falcon / RefinedWeb beyond q/k/v/o (fused into one QKV matrix, the same count): a 4h GELU MLP,
    LayerNorms with biases, and with `bias` set the attention's and MLP's biases (transformers' FalconModel)."""
    h, heads, head_dim = cfg["hidden_size"], cfg["num_attention_heads"], cfg["head_dim"]
    qkv = (heads + 2 * cfg["num_key_value_heads"]) * head_dim
    new_arch = bool(cfg.get("new_decoder_architecture")) or cfg.get("n_head_kv") is not None
    ffn = cfg.get("ffn_hidden_size") or 4 * h
    if not cfg.get("parallel_attn", True):
        norms = 2
    elif new_arch:
        norms = cfg.get("num_ln_in_parallel_attn") or 2
    else:
        norms = cfg.get("num_ln_in_parallel_attn") or 1
    t.linear += 2 * h * ffn
    t.other += norms * 2 * h + (qkv + h + ffn + h if cfg.get("bias") else 0)


def _is_moe_layer(cfg: dict, i: int) -> bool:
    experts = _num_experts(cfg)
    if not experts:
        return False
    model_type = cfg["model_type"]
    if model_type in ("deepseek", "deepseek_v2", "deepseek_v3", "kimi_k2"):
        return i >= cfg.get("first_k_dense_replace", 0) and i % cfg.get("moe_layer_freq", 1) == 0
    if model_type in ("qwen2_moe", "qwen3_moe", "qwen3_next"):
        if i in (cfg.get("mlp_only_layers") or []):
            return False
        return (i + 1) % cfg.get("decoder_sparse_step", 1) == 0
    return True


def _num_experts(cfg: dict) -> int:
    return cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0


def _mlp(cfg: dict, i: int, t: _Tally) -> None:
    h = cfg["hidden_size"]
    if not _is_moe_layer(cfg, i):
        t.linear += 3 * h * cfg["intermediate_size"]
        return
    model_type = cfg["model_type"]
    experts, top_k = _num_experts(cfg), cfg.get("num_experts_per_tok", 1)
    inter = cfg.get("moe_intermediate_size") or cfg["intermediate_size"]
    per_expert = 3 * h * inter
    t.other += h * experts  # router
    if model_type == "gpt_oss":
        t.other += experts + experts * (2 * inter + h)  # router bias, expert biases
        t.expert_biases += experts * (2 * inter + h)
        t.expert_biases_active += top_k * (2 * inter + h)
    if model_type == "deepseek_v3" or cfg.get("topk_method") == "noaux_tc":
        t.other += experts  # e_score_correction_bias
    t.experts += experts * per_expert
    t.experts_active += top_k * per_expert
    shared = cfg.get("shared_expert_intermediate_size") or 0
    if shared:
        t.linear += 3 * h * shared
        t.other += h  # shared_expert_gate
    n_shared = cfg.get("n_shared_experts") or 0
    if n_shared:
        t.linear += 3 * h * inter * n_shared
