"""Counts every process sees at once: each account's log, appended to in Redis.

With workers, a download served by one process and a download served by another must
fill the same quota at the same moment, or a burst spread over N processes gets N
times the limit. Synapse's own replication Redis is there in every worker deployment,
so each (control, account) keeps its recent rows in a Redis list, and a process
appends its row only if it has seen every row before it (`append_if_seen`): one round
trip, atomic in Redis. If another process appended meanwhile, Redis answers with the
rows it lacks; the process merges them, judges again, and tries again. So a limit is
never passed, whatever the number of processes: exact, not eventually.

A list lives as long as the account is active (its time to live is the longest
window), holds what the longest window needs, and is seeded from the database when
missing. The database stays the record (every process writes its own rows behind).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attr

from synapse_tchap_guard.policy import Record

logger = logging.getLogger(__name__)

# KEYS: the list, its base (rows trimmed from its head so far).
# ARGV: rows seen by the caller, cut-off time, time to live (ms), rows to append.
# Returns {1, total} once appended; {0, total, rows...} with the rows the caller
# lacks; {-1} when the list is missing (seed it from the database).
_APPEND_IF_SEEN = """
local base = tonumber(redis.call('GET', KEYS[2]) or '-1')
if base < 0 then return {-1} end
local total = base + redis.call('LLEN', KEYS[1])
local seen = tonumber(ARGV[1])
if seen ~= total then
  if seen < base then return {-1} end
  local reply = redis.call('LRANGE', KEYS[1], seen - base, -1)
  table.insert(reply, 1, total)
  table.insert(reply, 1, 0)
  return reply
end
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
total = total + #ARGV - 3
local cutoff = tonumber(ARGV[2])
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or tonumber(string.match(head, '^%d+')) > cutoff then break end
  redis.call('LPOP', KEYS[1])
  base = base + 1
end
redis.call('SET', KEYS[2], base, 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, total}
"""

# KEYS: the list, its base. ARGV: time to live (ms), rows. Appends whatever the
# caller has seen (amendments: bytes, failures), if the list exists. Returns 1 or 0.
_APPEND = """
if not redis.call('GET', KEYS[2]) then return 0 end
for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""

# KEYS: the list, its base. ARGV: time to live (ms), rows from the database.
# Seeds a missing list; returns {total, rows...}: the whole list, seeded or found.
_SEED = """
if not redis.call('GET', KEYS[2]) then
  redis.call('DEL', KEYS[1])
  for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
  redis.call('SET', KEYS[2], 0, 'PX', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local base = tonumber(redis.call('GET', KEYS[2]))
local reply = redis.call('LRANGE', KEYS[1], 0, -1)
table.insert(reply, 1, base + #reply)
return reply
"""

# Runs a script: (source, keys, args) -> Redis's reply.
Eval = Callable[[str, Sequence[str], Sequence[str]], Awaitable[Any]]


@attr.frozen
class SharedRow:
    """A row as every process sees it: who counted it, and what it counts."""

    origin: str  # the process (and its start) that counted it
    record: Record
    target: str | None

    def encode(self) -> str:
        r = self.record
        fields = [
            r.ts,
            r.attempts,
            r.served,
            r.bytes,
            r.refused,
            self.origin,
            self.target,
        ]
        return f"{r.ts}|{json.dumps(fields, separators=(',', ':'))}"

    @classmethod
    def decode(cls, raw: str | bytes) -> SharedRow:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        ts, attempts, served, size, refused, origin, target = json.loads(
            text.split("|", 1)[1]
        )
        return cls(origin, Record(ts, attempts, served, size, refused), target)


@attr.frozen
class Appended:
    total: int


@attr.frozen
class Behind:
    """Another process appended first: these are the rows the caller lacks."""

    total: int
    rows: list[SharedRow]


class Missing:
    """No list for this account: seed it from the database first."""


Answer = Appended | Behind | Missing


class SharedCounts:
    def __init__(self, run: Eval, time_to_live_ms: int) -> None:
        self._run = run
        self._ttl = str(time_to_live_ms)

    @staticmethod
    def keys(control: str, user_id: str) -> list[str]:
        # One hash tag, so both keys live on the same node of a Redis cluster.
        tag = "{" + json.dumps([control, user_id]) + "}"
        return [f"tchap_guard:{tag}:rows", f"tchap_guard:{tag}:base"]

    async def append_if_seen(
        self, keys: list[str], seen: int, rows: Sequence[SharedRow], cutoff: int
    ) -> Answer:
        reply = await self._run(
            _APPEND_IF_SEEN,
            keys,
            [str(seen), str(cutoff), self._ttl, *(row.encode() for row in rows)],
        )
        if reply[0] == 1:
            return Appended(int(reply[1]))
        if reply[0] == 0:
            return Behind(int(reply[1]), [SharedRow.decode(raw) for raw in reply[2:]])
        return Missing()

    async def append(self, keys: list[str], rows: Sequence[SharedRow]) -> None:
        await self._run(_APPEND, keys, [self._ttl, *(row.encode() for row in rows)])

    async def seed(
        self, keys: list[str], rows: Sequence[SharedRow]
    ) -> tuple[int, list[SharedRow]]:
        """Seed a missing list with the database's rows; returns the list as it is
        (another process may have seeded it first)."""
        reply = await self._run(
            _SEED, keys, [self._ttl, *(row.encode() for row in rows)]
        )
        return int(reply[0]), [SharedRow.decode(raw) for raw in reply[1:]]

    async def drop(self, keys: list[str]) -> None:
        await self._run("redis.call('DEL', unpack(KEYS)) return 1", keys, [])
