"""DeviceMemory's used-memory figure says where it came from: NVML for this process, NVML for the whole
device (a container hides our PID from NVML), or cudaMemGetInfo for the whole device (no NVML). Faked
NVML and CUDA, so this runs anywhere."""

import types

import pytest

torch = pytest.importorskip("torch")

from kvplan.runtime import memory  # noqa: E402


class Proc:
    def __init__(self, pid, used):
        self.pid, self.usedGpuMemory = pid, used


def fake_nvml(procs, device_used, fail=False):
    class NVMLError(Exception):
        pass

    def running(handle):
        if fail:
            raise NVMLError("Insufficient Permissions")
        return procs

    return types.SimpleNamespace(NVMLError=NVMLError, nvmlDeviceGetComputeRunningProcesses=running,
                                 nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(used=device_used))


@pytest.fixture
def cuda_memory(monkeypatch):
    def make(nvml):
        monkeypatch.setattr(memory, "_nvml_handle", lambda device: None if nvml is None else "handle")
        if nvml is not None:
            monkeypatch.setitem(__import__("sys").modules, "pynvml", nvml)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (30 << 30, 80 << 30))
        return memory.DeviceMemory("cuda:0")
    return make


def test_this_process_from_nvml(cuda_memory):
    import os

    m = cuda_memory(fake_nvml([Proc(1, 5 << 30), Proc(os.getpid(), 7 << 30)], 40 << 30))
    assert m.nvml_used() == 7 << 30
    assert m.used_sources == [memory.NVML_PROCESS] and m.used_basis() == "NVML, this process"


def test_whole_device_from_nvml_when_nvml_does_not_list_this_process(cuda_memory):
    m = cuda_memory(fake_nvml([Proc(123456789, 7 << 30)], 40 << 30))  # a host PID: not ours
    assert m.nvml_used() == 40 << 30
    assert m.used_sources == [memory.NVML_DEVICE] and "whole device" in m.used_basis()


def test_whole_device_from_cuda_without_nvml(cuda_memory):
    m = cuda_memory(None)
    assert m.nvml_used() == 50 << 30  # total - free
    assert m.used_sources == [memory.CUDA_DEVICE] and "cudaMemGetInfo" in m.used_basis()


def test_a_failed_nvml_query_is_no_reading_with_the_reason(cuda_memory):
    m = cuda_memory(fake_nvml([], 40 << 30, fail=True))
    assert m.nvml_used() is None
    assert m.used_sources == [] and "Insufficient Permissions" in m.unavailable


def test_mixed_sources_are_all_named(cuda_memory, monkeypatch):
    import os

    procs = [Proc(os.getpid(), 7 << 30)]
    m = cuda_memory(fake_nvml(procs, 40 << 30))
    m.nvml_used()
    procs.clear()
    m.nvml_used()
    assert m.used_sources == [memory.NVML_PROCESS, memory.NVML_DEVICE]


def test_cpu_has_no_reading():
    m = memory.DeviceMemory("cpu")
    assert m.nvml_used() is None and m.used_sources == []
