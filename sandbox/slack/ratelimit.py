"""Token-bucket rate limits per Web API method, the way Slack applies them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """``per_minute`` sustained, with up to ``burst`` calls at once.

    ``per_channel`` keys the bucket by the ``channel`` argument (``chat.postMessage``);
    otherwise one bucket serves the whole workspace for that method.
    """

    per_minute: float
    burst: int = 1
    per_channel: bool = False

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_minute > 0 and burst >= 1")

    @classmethod
    def per_second(cls, rate: float, burst: int = 1, *, per_channel: bool = False) -> RateLimit:
        return cls(per_minute=rate * 60, burst=burst, per_channel=per_channel)


# Slack's documented tiers: Tier 2 20+/min, Tier 3 50+/min, Tier 4 100+/min, "sporadic
# bursts welcome"; chat.postMessage about 1 per second per channel with short bursts.
TIER_2 = RateLimit(per_minute=20, burst=5)
TIER_3 = RateLimit(per_minute=50, burst=15)
TIER_4 = RateLimit(per_minute=100, burst=25)

DEFAULT_RATE_LIMITS: Mapping[str, RateLimit] = {
    "chat.postMessage": RateLimit(per_minute=60, burst=4, per_channel=True),
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": TIER_4,
    "conversations.open": TIER_3,
    "conversations.history": TIER_3,
    "conversations.replies": TIER_3,
    "users.info": TIER_4,
    "usergroups.users.list": TIER_2,
    "views.open": TIER_4,
}


class _Bucket:
    __slots__ = ("limit", "tokens", "updated")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = now

    def take(self, now: float) -> float | None:
        """Take one token; return ``None`` or the seconds until one is available."""
        rate = self.limit.per_minute / 60.0
        self.tokens = min(float(self.limit.burst), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / rate


class RateLimiter:
    """Buckets keyed by (method, channel); limits may be changed while running."""

    def __init__(
        self,
        limits: Mapping[str, RateLimit | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = True
        self._limits: dict[str, RateLimit] = {k: v for k, v in limits.items() if v is not None}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._clock = clock

    @property
    def limits(self) -> Mapping[str, RateLimit]:
        return dict(self._limits)

    def set(self, method: str, limit: RateLimit | None) -> None:
        """Replace (or with ``None`` remove) the limit of one method; its buckets restart full."""
        if limit is None:
            self._limits.pop(method, None)
        else:
            self._limits[method] = limit
        for key in [k for k in self._buckets if k[0] == method]:
            del self._buckets[key]

    def reset(self) -> None:
        """Refill every bucket."""
        self._buckets.clear()

    def check(self, method: str, channel: str | None) -> int | None:
        """Count one call; return ``None`` if allowed, else the ``Retry-After`` seconds."""
        if not self.enabled:
            return None
        limit = self._limits.get(method)
        if limit is None:
            return None
        key = (method, (channel or "") if limit.per_channel else "")
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(limit, now)
        wait = bucket.take(now)
        if wait is None:
            return None
        # Slack sends whole seconds; never 0, or a client would retry at once.
        return max(1, math.ceil(wait))
