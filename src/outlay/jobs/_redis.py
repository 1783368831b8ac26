"""Jobs in the Redis store's own namespace, under its hash tag (``{namespace}:j:<id>`` ...).

Every move is one Lua script (``_redis_lua/``), atomic at the server, on the server's clock,
run through the store's connection (and its trio bridge); the key layout is described in
``_redis_lua/common.lua``. A claim picks the oldest queued job of its lanes and leases it in
the same script, so two workers never claim one job.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

from redis.exceptions import RedisError

from ..stores import Store
from ..stores._redis import _CLOCK_LUA, RedisStore, _map_error, _Script, _text
from ._model import MAX_ERROR, JobRow
from ._store import JobStore


def _load_scripts() -> dict[str, _Script]:
    folder = resources.files(__package__ or "outlay.jobs").joinpath("_redis_lua")
    common = _CLOCK_LUA + "\n" + folder.joinpath("common.lua").read_text(encoding="utf-8")
    scripts = {}
    for name in ("add", "claim", "heartbeat", "finish", "fail", "recover", "settled"):
        source = common + "\n" + folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        scripts[name] = _Script(f"jobs_{name}", source, sha)
    return scripts


_SCRIPTS: Final = _load_scripts()


def _ms(seconds: float) -> str:
    return str(max(1, math.ceil(seconds * 1000)))


def _parse(reply: Sequence[Any]) -> JobRow:
    """A job from ``{id, field, value, ...}`` as the scripts return it."""
    fields = {_text(reply[i]): _text(reply[i + 1]) for i in range(1, len(reply) - 1, 2)}
    lease = fields.get("lease")
    return JobRow(
        id=_text(reply[0]), lane=fields["lane"], spec=fields["spec"],
        max_attempts=int(fields["max"]), created_at=float(fields["created"]),
        state=fields["state"], attempts=int(fields["attempts"]), claim=fields.get("claim"),
        lease_until=None if lease is None else int(lease) / 1000, outcome=fields.get("outcome"),
        result=fields.get("result"), actual=fields.get("actual"), error=fields.get("error"))


class RedisJobStore(JobStore):
    """The jobs of one ``RedisStore`` namespace."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._prefix = "{" + store.namespace + "}:"
        self._leases = self._prefix + "jl"
        self._all = self._prefix + "jall"

    @classmethod
    def for_store(cls, store: Store) -> RedisJobStore:
        assert isinstance(store, RedisStore)
        return cls(store)

    def _job(self, job_id: str) -> str:
        return f"{self._prefix}j:{job_id}"

    def _queue(self, lane: str) -> str:
        return f"{self._prefix}jq:{lane}"

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        return await self._store._run(_SCRIPTS[name], keys, args)

    async def add(self, row: JobRow) -> None:
        reply = await self._run(
            "add", [self._job(row.id), self._all, self._queue(row.lane), self._prefix + "jseq"],
            [row.id, row.lane, row.spec, str(row.max_attempts), repr(row.created_at)])
        if _text(reply) == "taken":
            raise ValueError(f"job id {row.id!r} is taken")

    async def claim(self, lanes: Sequence[str], token: str, lease: float) -> JobRow | None:
        reply = await self._run("claim", [self._leases, *(self._queue(lane) for lane in lanes)],
                                [self._prefix, token, _ms(lease)])
        return _parse(reply) if reply else None

    async def heartbeat(self, job_id: str, token: str, lease: float) -> bool:
        reply = await self._run("heartbeat", [self._job(job_id), self._leases],
                                [job_id, token, _ms(lease)])
        return bool(reply)

    async def finish(self, job_id: str, token: str, *, result: str | None, actual: str | None,
                     lease: float) -> bool:
        reply = await self._run("finish", [self._job(job_id), self._leases],
                                [job_id, token, result or "null", actual or "{}", _ms(lease)])
        return bool(reply)

    async def fail(self, job_id: str, token: str, *, error: str, retry: bool,
                   lease: float) -> JobRow | None:
        reply = await self._run("fail", [self._job(job_id), self._leases],
                                [self._prefix, job_id, token, error[:MAX_ERROR],
                                 "1" if retry else "0", _ms(lease)])
        return _parse(reply) if reply else None

    async def recover(self, lease: float, limit: int = 100) -> list[JobRow]:
        reply = await self._run("recover", [self._leases],
                                [self._prefix, _ms(lease), str(int(limit))])
        return [_parse(item) for item in reply]

    async def settled(self, job_id: str) -> bool:
        reply = await self._run("settled", [self._job(job_id), self._leases], [job_id])
        return bool(reply)

    async def get(self, job_id: str) -> JobRow | None:
        found = await self._read([job_id])
        return found[0] if found else None

    async def rows(self, state: str | None = None) -> list[JobRow]:
        client = self._store.client

        async def ids() -> list[str]:
            return [_text(i) for i in await client.zrange(self._all, 0, -1)]

        try:
            every = await self._store._call(ids)
        except (RedisError, OSError) as exc:
            raise _map_error(exc) from exc
        found = await self._read(every)
        return [row for row in found if state is None or row.state == state]

    async def _read(self, job_ids: list[str]) -> list[JobRow]:
        """The jobs with these ids (missing ones left out), in one pipelined round trip."""
        if not job_ids:
            return []
        client = self._store.client

        async def read() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self._job(job_id))
            replies: list[Any] = await pipe.execute()
            return replies

        try:
            replies = await self._store._call(read)
        except (RedisError, OSError) as exc:
            raise _map_error(exc) from exc
        rows = []
        for job_id, fields in zip(job_ids, replies, strict=True):
            if fields:
                flat: list[Any] = [job_id]
                for key, value in fields.items():
                    flat += [key, value]
                rows.append(_parse(flat))
        return rows
