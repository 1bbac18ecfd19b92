"""Device memory as torch's caching allocator and NVML see it.

On CUDA every figure is read without a device sync (allocator counters are host-side). The
driver's "used" figure (CUDA context included) comes from one of three sources, and every reading
records which in `used_sources`: NVML's figure for this process; NVML's figure for the whole device
when NVML does not list this process (in a container NVML reports host PIDs, which never match
ours); cudaMemGetInfo's total - free for the whole device when NVML is unavailable (nvidia-ml-py
missing, or no access to the driver library). A whole-device figure includes the driver's own
reservation and any other process on the GPU. On CPU there is no allocator to ask: figures are
None and callers say so (total_bytes is the host's physical memory).
"""

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemorySample:
    allocated_bytes: int | None  # torch tensors alive
    reserved_bytes: int | None  # held by torch's caching allocator
    peak_allocated_bytes: int | None  # since the last reset
    nvml_used_bytes: int | None  # the driver's used figure: DeviceMemory.used_sources says whose


NVML_PROCESS = "NVML, this process"
NVML_DEVICE = "NVML, whole device (this process is not in NVML's list, e.g. a container's own PIDs)"
CUDA_DEVICE = "cudaMemGetInfo, whole device (no NVML: nvidia-ml-py missing or no driver access)"


@dataclass(frozen=True)
class OtherProcess:
    pid: int
    used_bytes: int | None


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors`: what was allocated, views and tied tensors once."""
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), str(t.device))
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


class DeviceMemory:
    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._nvml = None
        self.used_sources: list[str] = []  # every source a used figure came from, in first-seen order
        self.unavailable: str | None = None  # why the last used figure is None
        if self.device.type == "cuda":
            self._nvml = _nvml_handle(self.device)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def total_bytes(self) -> int | None:
        """The device's memory: the GPU's as CUDA reports it, or the host's physical memory."""
        if not self.is_cuda:
            try:
                return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                return None
        return torch.cuda.get_device_properties(self.device).total_memory

    def reset_peak(self) -> None:
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def sample(self) -> MemorySample:
        if not self.is_cuda:
            return MemorySample(None, None, None, None)
        return MemorySample(torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device),
                            torch.cuda.max_memory_allocated(self.device), self.nvml_used())

    def nvml_used(self) -> int | None:
        """The driver's used memory: this process's (NVML), else the whole device's (NVML, then
        cudaMemGetInfo); the source goes into `used_sources`. None when an NVML query fails."""
        if not self.is_cuda:
            return None
        if self._nvml is None:
            free, total = torch.cuda.mem_get_info(self.device)
            return self._used(total - free, CUDA_DEVICE)
        import pynvml

        try:
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(self._nvml):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return self._used(int(proc.usedGpuMemory), NVML_PROCESS)
            return self._used(int(pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used), NVML_DEVICE)
        except pynvml.NVMLError as exc:
            self.unavailable = f"the NVML query failed ({exc})"
            return None

    def _used(self, num_bytes: int, source: str) -> int:
        if source not in self.used_sources:
            self.used_sources.append(source)
        return num_bytes

    def used_basis(self) -> str:
        """Where the used figures came from, e.g. 'NVML, this process'."""
        return "; ".join(self.used_sources) or "no reading"

    def other_processes(self) -> list[OtherProcess]:
        """Processes other than this one holding memory on the device (NVML), before we start."""
        if self._nvml is None:
            return []
        import pynvml

        try:
            procs = list(pynvml.nvmlDeviceGetComputeRunningProcesses(self._nvml))
            procs += list(pynvml.nvmlDeviceGetGraphicsRunningProcesses(self._nvml))
        except pynvml.NVMLError:
            return []
        return [OtherProcess(p.pid, int(p.usedGpuMemory) if p.usedGpuMemory is not None else None)
                for p in procs if p.pid != os.getpid()]

    def name(self) -> str:
        if self.is_cuda:
            return torch.cuda.get_device_name(self.device)
        return "CPU"


def _nvml_handle(device: torch.device):
    """The NVML handle of a torch CUDA device, matched by UUID (CUDA_VISIBLE_DEVICES renumbers)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py or no driver: NVML figures stay None
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    try:
        if uuid is not None:
            text = str(uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
    except pynvml.NVMLError:
        pass
    try:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError:
        return None
