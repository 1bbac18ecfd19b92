"""Engine faults: a preemption storm completes correctly; OOM at load is a finding with exit 1."""

import json

import pytest

torch = pytest.importorskip("torch")
try:  # import triton while conftest's TRITON_INTERPRET=1 still holds (see tests/test_runtime.py)
    import triton  # noqa: F401
except ImportError:
    pass

from kvplan.cli import main  # noqa: E402
from kvplan.runtime import EngineConfig, LLMEngine, load_engine_model  # noqa: E402
from kvplan.model import LoadedModel, spec_from_config  # noqa: E402

TINY = {"model_type": "llama", "vocab_size": 97, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 128,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": None, "torch_dtype": "float32"}


@pytest.fixture(autouse=True)
def torch_reference_kernels(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _engine(num_blocks: int):
    loaded = LoadedModel(spec_from_config(TINY, name="tiny", source="test"), None, TINY, None)
    model = load_engine_model(loaded, dtype=torch.float32, seed=0)
    return LLMEngine(model, loaded.spec, EngineConfig(num_blocks=num_blocks, block_size=4, max_num_seqs=16,
                                                      max_num_batched_tokens=64))


def test_preemption_storm_completes_with_unconstrained_outputs():
    gen = torch.Generator().manual_seed(7)
    prompts = [torch.randint(3, 97, (int(n),), generator=gen).tolist()
               for n in torch.randint(3, 11, (24,), generator=gen)]
    roomy = _engine(num_blocks=512)
    expected = roomy.generate(prompts, max_tokens=10)

    storm = _engine(num_blocks=6)  # 24 tokens: one 20-token request at a time at worst
    preempted = []
    reqs = [storm.add_request(p, 10) for p in prompts]
    storm.run(on_step=lambda eng, out: preempted.extend(out.preempted))
    assert [list(r.output_token_ids) for r in reqs] == expected
    assert len(preempted) >= 10  # it really was a storm
    assert storm.num_free_blocks == 6
    storm.kv_manager.check_integrity()


def test_oom_at_load_is_a_finding_with_exit_1(tmp_path, monkeypatch, capsys):
    import kvplan.runtime.model_loader as loader

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 15.00 GiB")

    monkeypatch.setattr(loader, "load_engine_model", no_memory)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    code = main(["profile", str(config), "--device", "cpu", "--dtype", "fp32", "--kv-cache-memory", "1MiB",
                 "--max-model-len", "64", "--requests", "4", "--prompt-len", "8", "--output-len", "4",
                 "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 1
    report = json.loads(out)
    assert "out of memory during load" in json.dumps(report)
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("kvplan: error: profile finding: out of memory during load")
