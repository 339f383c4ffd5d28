"""The per-key submission rate limit's state, kept where every API process sees it.

`carrygate serve --api-workers N` runs N processes behind one port, and a client's submissions land on
any of them, so the limit cannot live in process memory (it would allow N times the limit). Each
limiter keeps a sliding log of the last minute's allowed submissions per key:

- `DatabaseRateLimiter` (the default, `CARRYGATE_RATE_LIMIT_STORAGE=database`): rows in the
  `rate_limit_hits` table of the service's own database, so the embedded set-up needs nothing more.
  One short transaction per submission: the key's rows older than the window are deleted, and a new
  row is inserted only if fewer than the limit remain (one `INSERT ... SELECT ... WHERE count < limit`).
  On SQLite the first write takes the database's write lock, so the count and the insert are atomic
  across processes; on PostgreSQL a transaction-scoped advisory lock on the key does the same.
- `RedisRateLimiter` (`CARRYGATE_RATE_LIMIT_STORAGE=redis://host:6379/0`): one sorted set per key,
  trimmed, counted and appended by one Lua script, which Redis runs atomically.

`hit` returns None when the submission is allowed, else the seconds until the oldest submission in the
window leaves it (the `Retry-After`). Times are wall-clock seconds (`time.time()`), the one clock that
processes share; `now` exists for tests.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Protocol

from sqlalchemy import Engine, Float, Integer, String, bindparam, delete, func, insert, select, text

from carrygate.store.api_tables import RateLimitHit
from carrygate.store.sessions import write_lock

WINDOW_SECONDS = 60.0
_hits = RateLimitHit.__table__
# The statements are built once (SQLAlchemy then caches their compiled form): building them cost more per
# submission than running them.
_KEY, _NOW = bindparam("key", type_=String()), bindparam("now", type_=Float())
_SINCE, _LIMIT = bindparam("since", type_=Float()), bindparam("limit", type_=Integer())
_IN_WINDOW = (_hits.c.key_id == _KEY) & (_hits.c.at > _SINCE)
_TRIM = delete(_hits).where(_hits.c.key_id == _KEY, _hits.c.at <= _SINCE)
_ADD = insert(_hits).from_select(
    ["key_id", "at"], select(_KEY, _NOW).where(select(func.count()).select_from(_hits).where(_IN_WINDOW).scalar_subquery() < _LIMIT)
).returning(_hits.c.id)
_OLDEST = select(func.min(_hits.c.at)).where(_IN_WINDOW)
_LOCK = text("SELECT pg_advisory_xact_lock(:lock)")


class RateLimiter(Protocol):
    def hit(self, key: str, per_minute: int, now: float | None = None) -> float | None:
        """Record one submission of `key` if fewer than `per_minute` fell in the last minute: None; else the
        seconds until the next one would be allowed (nothing is recorded)."""
        ...


def _advisory_lock_id(key: str) -> int:
    """A signed 64-bit number for `pg_advisory_xact_lock`, the same in every process."""
    return int.from_bytes(hashlib.sha256(f"carrygate-rate-limit:{key}".encode()).digest()[:8], "big", signed=True)


class DatabaseRateLimiter:
    """The sliding log in the `rate_limit_hits` table (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._turn = write_lock(engine)  # SQLite: writers take turns without the busy handler's sleeps

    def hit(self, key: str, per_minute: int, now: float | None = None) -> float | None:
        now = time.time() if now is None else now
        params = {"key": key, "now": now, "since": now - WINDOW_SECONDS, "limit": per_minute}
        with self._turn, self.engine.begin() as connection:
            if self.postgres:
                connection.execute(_LOCK, {"lock": _advisory_lock_id(key)})
            # The first statement writes: on SQLite it takes the write lock before anything is read.
            connection.execute(_TRIM, params)
            if connection.execute(_ADD, params).first() is not None:
                return None
            oldest = connection.execute(_OLDEST, params).scalar()
        return WINDOW_SECONDS if oldest is None else max(0.0, oldest + WINDOW_SECONDS - now)


_SLIDING_LOG = """
local key, now, limit, window, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, member)
  redis.call('EXPIRE', key, math.ceil(window))
  return false
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""


class RedisRateLimiter:
    """The sliding log as one Redis sorted set per key (see the module docstring)."""

    def __init__(self, url: str, prefix: str = "carrygate:rate-limit:") -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self.script = self.client.register_script(_SLIDING_LOG)
        self.prefix = prefix

    def hit(self, key: str, per_minute: int, now: float | None = None) -> float | None:
        now = time.time() if now is None else now
        reply = self.script(keys=[self.prefix + key], args=[repr(now), per_minute, repr(WINDOW_SECONDS), f"{now!r}:{uuid.uuid4().hex}"])
        return None if reply is None else max(0.0, float(reply))


def make_rate_limiter(storage: str, engine: Engine) -> RateLimiter:
    """The limiter `CARRYGATE_RATE_LIMIT_STORAGE` names: "database" (this engine's database) or a Redis URL."""
    if storage == "database":
        return DatabaseRateLimiter(engine)
    return RedisRateLimiter(storage)
