"""Paged KV allocation shared by `kvplan simulate` and the engine: pure Python, no tensors, no clocks.

    BlockPool            fixed blocks, refcounts, LRU free list, prefix-cache map   (block_pool.py)
    KVCacheManager       block tables per page group, prefix caching, copy-on-write (kv_cache_manager.py)
    ContiguousKVManager  the max_model_len-reservation baseline                     (contiguous.py)
    Scheduler            continuous batching, chunked prefill, preemption           (scheduler.py)
    EventScheduler       the same policy, touching only requests with events        (events.py)
    Simulator            drives them with a workload and a clock                    (simulator.py)
"""

from .block_pool import BlockPool
from .clock import CostModel, StepClock
from .contiguous import ContiguousKVManager
from .events import EventScheduler
from .kv_cache_manager import NULL_BLOCK, KVCacheManager
from .metrics import Metrics
from .request import Request, RequestStatus
from .scheduler import ScheduledRequest, Scheduler, SchedulerConfig, SchedulerOutput
from .simulator import SimRequest, Simulator
from .trace import TraceWorkload
from .workload import Distribution, SyntheticWorkload, WorkItem

__all__ = [
    "BlockPool", "ContiguousKVManager", "CostModel", "Distribution", "EventScheduler", "KVCacheManager", "Metrics",
    "NULL_BLOCK", "Request", "RequestStatus", "ScheduledRequest", "Scheduler", "SchedulerConfig", "SchedulerOutput",
    "SimRequest", "Simulator", "StepClock", "SyntheticWorkload", "TraceWorkload", "WorkItem",
]
