"""Paged KV allocation shared by `kvplan simulate` and the runtime: pure Python, no tensors, no clocks.

    BlockPool            fixed blocks, refcounts, LRU free list, prefix-cache map   (block_pool.py)
    KVCacheManager       block tables per page group, prefix caching, copy-on-write (kv_cache_manager.py)
    longest_hit          the prefix hit valid in every group (vLLM's hybrid rule)   (prefix_hits.py)
    ReservingKVCacheManager  the contiguous baseline: blocks reserved at admission  (contiguous.py)
    LazyDecode           the allocator's side of skipping decode steps (simulator)  (lazy_decode.py)
    Scheduler            continuous batching, chunked prefill, preemption           (scheduler.py)
"""

from .block_pool import BlockPool
from .contiguous import ReservingKVCacheManager, reservation_blocks
from .kv_cache_manager import NULL_BLOCK, KVCacheManager
from .lazy_decode import LazyDecode
from .request import Request, RequestStatus
from .scheduler import ScheduledRequest, Scheduler, SchedulerConfig, SchedulerOutput

__all__ = [
    "BlockPool", "KVCacheManager", "LazyDecode", "NULL_BLOCK", "Request", "RequestStatus", "ReservingKVCacheManager",
    "ScheduledRequest", "Scheduler", "SchedulerConfig", "SchedulerOutput", "reservation_blocks",
]
