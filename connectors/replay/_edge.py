"""A Source used only for its edge helpers (offer/price/interruption validation) during replay: its clock
is the record's own time, so observed_at = quoted_at (the replay knows nothing later)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from connectors.base import MarketEvent, Reject, Source


class ReplayEdge(Source):
    name = "replay"
    provider = "aws"

    def __init__(self, name: str, provider: str) -> None:
        super().__init__(env={})
        self.name, self.provider = name, provider  # type: ignore[misc]
        self.at = datetime(1970, 1, 1, tzinfo=UTC)
        self._now = lambda: self.at

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        return ()

    def keep(self, items: Iterable[MarketEvent | Reject]) -> Iterable[MarketEvent]:
        """Events pass; rejects are counted and logged (never raised, never emitted)."""
        for it in items:
            if isinstance(it, Reject):
                self.reject(it.reason, it.detail)
            else:
                yield it
