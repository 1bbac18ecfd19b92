"""GPU catalog figures, NVML detection, size parsing and the overhead model's terms."""

import sys
import types

import pytest

from kvplan.errors import InputError
from kvplan.hardware import detect_gpu, find_gpu
from kvplan.plan import Deployment
from kvplan.plan.overhead import activation_peak_bytes, overhead_terms
from kvplan.model import load_model
from kvplan.units import GiB, MiB, fmt_gb, fmt_gib, parse_count, parse_size

# Memory as the devices report it (shared/reference/models.md, GPU facts).
REPORTED = {
    "H100": 81559 * MiB, "H100-PCIe": 81559 * MiB, "H200": 143771 * MiB, "B200": 183359 * MiB,
    "A100-40GB": 40960 * MiB, "A100-80GB": 81920 * MiB, "L40S": 46068 * MiB, "L4": 23034 * MiB,
    "A10G": 23028 * MiB, "RTX-4090": 24564 * MiB, "RTX-3090": 24576 * MiB, "MI300X": 206_158_430_208,
}


@pytest.mark.parametrize("name,memory", REPORTED.items())
def test_catalog_memory_as_reported(name, memory):
    assert find_gpu(name).memory_bytes == memory


def test_catalog_bandwidth_and_flops():
    h100 = find_gpu("h100_sxm")
    assert h100.bandwidth_bytes_per_s == 3.35e12 and h100.bf16_dense_flops == pytest.approx(989.4e12)
    assert find_gpu("A10G").bf16_dense_flops is None  # unpublished: not invented


def test_unknown_gpu_suggests_near_miss():
    with pytest.raises(InputError, match="did you mean"):
        find_gpu("H10")


def test_gpu_auto_reads_nvml(monkeypatch):
    fake = types.SimpleNamespace(
        NVMLError=type("NVMLError", (Exception,), {}),
        nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: object(),
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 PCIe",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=85_520_809_984),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpu = detect_gpu()
    assert gpu.memory_bytes == 85_520_809_984 and gpu.bandwidth_bytes_per_s == 2.0e12


@pytest.mark.parametrize("text,expected", [
    ("80GiB", 80 * GiB), ("24GB", 24 * 10**9), ("81559MiB", 81559 * MiB), ("1073741824", GiB),
    ("1.5GiB", 3 * GiB // 2), ("512 MiB", 512 * MiB), ("2e9", 2 * 10**9), ("1TB", 10**12), (4096, 4096),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "-1GiB", "80 potatoes", "nan", "1e400", "inf"])
def test_parse_size_rejects(text):
    with pytest.raises(InputError):
        parse_size(text)


def test_parse_count_k_suffix():
    assert parse_count("32k", "--context") == 32768 and parse_count("131072", "--context") == 131072
    with pytest.raises(InputError):
        parse_count("0", "--context")
    with pytest.raises(InputError):
        parse_count("1.5", "--context")


def test_formatting_labels_units():
    assert fmt_gib(GiB) == "1.00 GiB" and fmt_gb(10**9) == "1.00 GB" and fmt_gib(512 * MiB) == "0.50 GiB"


def test_activation_peak_formula_llama_8b():
    spec = load_model("llama-3.1-8b").spec
    dep = Deployment(max_num_batched_tokens=8192, max_num_seqs=256)
    # MLP gate+up and activation (3 x 14336), 4 hidden buffers, q (32 heads) + k, v (8 KV heads) x 128;
    # bf16; plus fp32 logits for 256 sampled rows of a 128,256-token vocabulary.
    expected = 8192 * (3 * 14336 + 4 * 4096 + (32 + 2 * 8) * 128) * 2 + 256 * 128256 * 4
    assert activation_peak_bytes(spec, dep, 2) == expected


def test_overhead_terms_and_overrides():
    spec = load_model("llama-3.1-8b").spec
    terms = {t.name: t.bytes for t in overhead_terms(spec, Deployment(tp=2, max_num_batched_tokens=8192, max_num_seqs=256), 2)}
    assert terms["non-torch (CUDA/NCCL)"] == 1024 * MiB and terms["CUDA graphs"] == 0
    assert terms["activation peak"] == activation_peak_bytes(spec, Deployment(tp=2, max_num_batched_tokens=8192, max_num_seqs=256), 2)
    only = overhead_terms(spec, Deployment(overhead_bytes=3 * GiB), 2)
    assert [t.bytes for t in only] == [3 * GiB]


@pytest.mark.parametrize("nvml_name,entry", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H100 PCIe", "H100-PCIe"), ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA A100-SXM4-40GB", "A100-40GB"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"), ("NVIDIA L40", None), ("NVIDIA A10G", "A10G"), ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("Tesla T4", None), ("NVIDIA H100 NVL", None),
])
def test_nvml_names_map_to_the_catalog(nvml_name, entry):
    from kvplan.hardware import catalog_match

    match = catalog_match(nvml_name)
    assert (match.name if match else None) == entry
