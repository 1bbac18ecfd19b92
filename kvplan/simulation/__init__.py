"""`kvplan simulate`: workloads and traces driven through the `kvplan.paging` allocator and scheduler
with a clock, no tensors.

    SyntheticWorkload / TraceWorkload   what arrives, when, with which tokens   (workload.py, trace.py)
    EventScheduler                      the Scheduler's policy, touching only requests with events (events.py)
    StepClock / CostModel               time per scheduler step                 (clock.py)
    Simulator                           drives them and records Metrics         (simulator.py, metrics.py)
    RequestTimes / latency_summary      TTFT, TPOT, e2e, tokens/s, SLO shares from per-request times (metrics.py;
                                        the runtime's profile calls it on measured times)
    simulate()                          the above on the pool an estimate predicts, beside a contiguous baseline (run.py)
"""

from .clock import CostModel, StepClock
from .events import EventScheduler
from .metrics import Metrics, RequestTimes, latency_summary
from .simulator import SimRequest, Simulator
from .trace import TraceWorkload
from .workload import Distribution, SyntheticWorkload, WorkItem

__all__ = ["CostModel", "Distribution", "EventScheduler", "Metrics", "RequestTimes", "SimRequest", "Simulator",
           "StepClock", "SyntheticWorkload", "TraceWorkload", "WorkItem", "latency_summary"]
