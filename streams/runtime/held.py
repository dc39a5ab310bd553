"""The held offers followed from the public plans topic (`cloudarb.plans.v1`): the market stage's view of which
offers are under a placement. The set logic is streams.core.held.HeldOffers; this adds reading the topic to its
end (`follow`) and picking up what follows (`poll`), with streams.runtime.store.TopicFollower."""

from __future__ import annotations

import logging

from pydantic_core import from_json

from streams.core.held import HeldOffers, plan_key
from streams.runtime.store import TopicFollower

log = logging.getLogger(__name__)


class FollowedHeldOffers(HeldOffers):
    """`HeldOffers` of one app's plans (the plans topic is shared by the apps of a cluster), kept from the plans
    topic: `follow`, then `poll` before each batch, `close` at the end."""

    def __init__(self, app_id: str) -> None:
        super().__init__()
        self._prefix = plan_key(app_id, "")
        self._follower: TopicFollower | None = None

    def _apply_record(self, _topic: str, _partition: int, key: bytes, value: bytes | None) -> None:
        k = key.decode()
        if k.startswith(self._prefix):
            self.apply(k, None if value is None else from_json(value))

    def follow(self, bootstrap: str, topic: str, partitions: int = 1, timeout_s: float = 30.0) -> int:
        """Read `topic` (its `partitions`) from its start to its end; `poll()` then picks up what follows.
        Returns the records read. The topic must exist (the market stage creates it when missing)."""
        self.close()
        follower = TopicFollower(bootstrap, [(topic, p) for p in range(partitions)], self._apply_record,
                                 group=f"{topic}-follower")
        try:
            n = follower.read_to_end(timeout_s=timeout_s)
        except BaseException:
            follower.close()
            raise
        self._follower = follower
        return n

    @property
    def following(self) -> bool:
        """True once `follow` has read the topic to its end (until `close`)."""
        return self._follower is not None

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply the records that arrived since the last call; returns how many."""
        return self._follower.poll(timeout_s) if self._follower is not None else 0

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
            self._follower = None
