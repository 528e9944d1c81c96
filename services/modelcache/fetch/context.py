"""What every source of a fetch shares: settings, the volume, the HTTP client, the
retry policy, the Hub token and the previous lock (a module of its own, so that the Hub
source and the Xet transfer can both use it without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx2

from modelcache.fetch.policy import Policy
from modelcache.fetch.transfer import Segmenting
from modelcache.layout import Layout
from modelcache.settings import Settings
from modelcache.volume_lock import Lock


@dataclass(frozen=True)
class Context:
    settings: Settings
    layout: Layout
    client: httpx2.Client
    policy: Policy
    token: str | None
    deep: bool
    previous: Lock | None

    def hub_headers(self) -> dict[str, str]:
        """For the Hub's host only: transfers never send them on to the hosts it redirects to."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def segmenting(self) -> Segmenting:
        return Segmenting(self.settings.segments, self.settings.segment_min_bytes)
