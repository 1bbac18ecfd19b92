"""Oracle: transformers' own config classes, built from the same fields, agree with kvplan.

transformers is used only here; kvplan's own path never imports it.
"""

import warnings

import pytest

from kvplan.model import bundled_names, load_model
from kvplan.model.loaders import bundled_entry

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig  # noqa: E402
from transformers.models.auto.configuration_auto import CONFIG_MAPPING  # noqa: E402

KIND_OF_LAYER_TYPE = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked",
                      "linear_attention": "state"}


def _hf_text_config(config: dict):
    fields = {k: v for k, v in config.items() if k not in ("architectures", "quantization_config")}
    model_type = fields.pop("model_type")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = AutoConfig.for_model(model_type, **fields)
    return cfg.get_text_config()


KNOWN = sorted(p.stem for p in set(bundled_names().values())
               if bundled_entry(p.stem)["config"]["model_type"] in CONFIG_MAPPING)


def test_oracle_covers_most_specs():
    assert len(KNOWN) >= 25


@pytest.mark.parametrize("name", KNOWN)
def test_layers_heads_head_dim_and_layer_types_agree(name):
    entry = bundled_entry(name)
    hf = _hf_text_config(entry["config"])
    spec = load_model(name).spec
    assert spec.num_layers == hf.num_hidden_layers

    per_layer = {}
    for g in spec.groups:
        for i in g.layers:
            per_layer[i] = g
    if getattr(hf, "kv_lora_rank", None):
        assert all(g.kind == "mla" for g in spec.groups)
        assert spec.groups[0].latent_dim == hf.kv_lora_rank + hf.qk_rope_head_dim
        return

    hf_head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    for g in spec.kv_groups():
        assert g.num_kv_heads == hf.num_key_value_heads
        assert g.k_head_dim == hf_head_dim

    layer_types = getattr(hf, "layer_types", None)
    if layer_types is not None:
        ours = [per_layer[i].kind for i in range(spec.num_layers)]
        theirs = [KIND_OF_LAYER_TYPE[t] for t in layer_types]
        if getattr(hf, "sliding_window", None) is None:  # a "sliding" layer with no window attends fully
            theirs = ["full" if k == "sliding" else k for k in theirs]
        assert ours == theirs
    else:  # no layer_types: transformers' cache slides every layer iff a window is set
        window = getattr(hf, "sliding_window", None)
        kinds = {g.kind for g in spec.groups}
        assert kinds == ({"sliding"} if window else {"full"})
    for g in spec.groups:
        if g.kind == "sliding":
            assert g.window_tokens == hf.sliding_window
