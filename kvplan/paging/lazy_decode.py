"""LazyDecode: what the event-driven simulator needs to advance decode requests without stepping them.

A decode step that only writes one slot per page group changes nothing but counters, so the
EventScheduler (kvplan.simulation.events) skips it and later accounts the writes in one go. This
object answers, over the KV manager's public interface only:

| question                                       | manager call                         |
|------------------------------------------------|--------------------------------------|
| how many steps until a real change             | decode_steps(req)                    |
| filled slots one skipped step adds             | slots_per_decode(req)                |
| may block boundaries be crossed in place       | keeps_every_token                    |
| do the step's pops fit the free list           | blocks_needed(), growth_blocks       |
| did those pops take a waiting request's hit    | hit_kept(req, blocks taken)          |
| cross a boundary without waking the request    | append_blocks(reqs)                  |
| account the skipped writes when it wakes       | catch_up(req, num_tokens)            |

Crossing in place is sound only when every group keeps every token: a crossing then only takes
blocks, and takes commute while the free list lasts (the EventScheduler's docstring says why no
metric can tell).
"""

from .request import Request


class LazyDecode:
    def __init__(self, kv_manager):
        self.kv = kv_manager
        self.in_place = kv_manager.keeps_every_token

    def steps_until_change(self, req: Request) -> int:
        """Decode steps, from the next one, that only write a slot per group (may err early, never late)."""
        return self.kv.decode_steps(req)

    def slots_per_decode(self, req: Request) -> int:
        return self.kv.slots_per_decode(req)

    def room_to_cross(self, crossing: int, active: list[Request]) -> bool:
        """Whether `crossing` lazy requests can each take their next block in every group, and the
        `active` requests their next step, without the free list running out (so nobody is preempted)."""
        kv = self.kv
        need = crossing * kv.growth_blocks + sum(kv.blocks_needed(r, r.num_tokens - r.num_computed_tokens)
                                                 for r in active)
        return need <= kv.num_free_blocks

    def hit_kept(self, req: Request, taken: list[int]) -> bool:
        """Whether blocks `taken` by crossings leave the prefix hit of req's last walk as it was."""
        return self.kv.hit_kept(req, taken)

    def cross(self, reqs: list[Request]) -> list[int]:
        """Each request crosses into its next block, in this order; returns the blocks taken."""
        return self.kv.append_blocks(reqs)

    def catch_up(self, req: Request, num_tokens: int) -> None:
        self.kv.catch_up(req, num_tokens)
