"""Benchmark: RedisStore reservations (reserve + commit) per second, next to raw EVALSHA.

    python benchmarks/bench_redis.py [--quick] [--url redis://host:port/db]

Without ``--url`` it starts its own ``redis-server`` on a free loopback port (no persistence),
so the server's command counters belong to this run alone. For each shape -- one task, 50
concurrent tasks, 4 processes x 50 tasks -- it measures

- ``store``: ``RedisStore.reserve`` + ``RedisStore.commit`` over two limits (Decimal USD and int
  calls), everything the library does per reservation (validation, encoding, error mapping);
- ``raw``: ``EVALSHA`` of the very same two scripts with pre-encoded arguments, through the same
  kind of client and connection pool, one call per operation;
- ``queue``: the same pre-encoded operations through the store's group commit (its queue,
  batches and round trips), without the store's checking, encoding or reply handling: the most
  the store's own per-operation code could gain;

(median and best of alternating rounds, so a drifting machine load hits both alike) and the
round trips per operation, from the server's ``INFO commandstats`` (EVALSHA + EVAL calls
per reserve or commit; 1.0 means one round trip, less means operations shared one), the
server's CPU time per operation (those scripts' ``usec`` per reserve or commit), and the
client's CPU time per reserve + commit pair (the benchmark processes' own, user and system,
while they run the loops): each side's own figure, when a busy or shared machine moves the
rates.

The ceiling: the server's own ``redis-benchmark`` (C, 50 connections, unpipelined) against the
same server in the same run, for ``EVALSHA`` of a minimal one-key script and of outlay's own
reserve script (a fresh random reservation id per call). The ``of ceiling`` column compares
reserve + commit pairs per second with those scripts per second.

The server alone (``floor``): the server's CPU per pair for outlay's ``batch`` script and for
``BARE_CALLS``, the same Redis calls with no logic, each driven in batches over one connection;
``1e6 / us`` is the most pairs per second one namespace could run if the server did nothing
else (an optimistic bound: it leaves out reading and answering each script), against the same
ceiling. Prints a table and writes ``benchmarks/results/redis.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from redis.utils import HIREDIS_AVAILABLE

from outlay._core._reservation import new_id  # the ids outlay's Budget makes
from outlay.stores._redis import _SCRIPTS, RedisStore, _frame

#: redis-py's reply parser in this run: hiredis (C, what ``outlay[redis]`` installs) or its own.
PARSER: Final = "hiredis" if HIREDIS_AVAILABLE else "python"
RESULTS = Path(__file__).resolve().parent / "results" / "redis.json"
AMOUNTS: dict[str, Any] = {"usd": Decimal("0.001"), "calls": 1}
ACTUAL: dict[str, Any] = {"usd": Decimal("0.0007")}

PROCESSES = "4 processes x 50 tasks"

#: AMOUNTS and ACTUAL as the store encodes them for its scripts (after the reservation id): a
#: reserve's lease (ms) and limit count, then per limit name, kind, units, scaled money, default
#: kind and cap, period end; a commit's count of actual amounts, then name, kind, units, money.
RESERVE_ARGS: Final = ["60000", "2", "usd", "d", "", "1000000", "", "", "",
                       "calls", "i", "1", "1000000000", "", "", ""]
COMMIT_ARGS: Final = ["1", "usd", "d", "", "700000"]


def settings(prefix: str) -> list[str]:
    """A store's ARGV[1..4] with default options: prefix, retain_ms, places, grace_ms."""
    return [prefix, "86400000", "9", "86400000"]

Op = Callable[[str], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server binary on PATH; pass --url redis://host:port/db")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", directory],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


def make_ops(store: RedisStore, kind: str) -> Op:
    """One reserve + commit: through the store, as raw EVALSHA of the same scripts, or through
    the store's group commit with pre-encoded arguments (``queue``)."""
    if kind == "store":

        async def through_store(rid: str) -> None:
            admission = await store.reserve(rid, AMOUNTS, lease=60)
            assert admission.admitted
            await store.commit(rid, ACTUAL)

        return through_store

    client = store.client
    prefix = "{" + store.namespace + "}:"
    reserve, commit = _SCRIPTS["reserve"].sha, _SCRIPTS["commit"].sha
    limit_keys = [prefix + "l:usd", prefix + "z:usd", prefix + "l:calls", prefix + "z:calls"]
    store_args = settings(prefix)

    async def raw(rid: str) -> None:
        reply = await client.evalsha(reserve, 5, prefix + "r:" + rid, *limit_keys, *store_args,
                                     rid, *RESERVE_ARGS)
        assert reply[0] == b"ok", reply
        await client.evalsha(commit, 1, prefix + "r:" + rid, *store_args, rid, *COMMIT_ARGS)

    async def queued(rid: str) -> None:
        keys = [prefix + "r:" + rid, *limit_keys]
        reply = await store._grouped("reserve", keys, [rid, *RESERVE_ARGS])
        assert reply[0] == b"ok", reply
        await store._grouped("commit", keys[:1], [rid, *COMMIT_ARGS])

    return raw if kind == "raw" else queued


async def run_tasks(url: str, namespace: str, kind: str, tasks: int, seconds: float,
                    ready: Callable[[], Awaitable[None]] | None = None) -> tuple[int, float]:
    """Connect, warm up, (signal ready and wait for the go), then run ``tasks`` loops of
    reserve + commit for ``seconds``; returns how many completed and the process's CPU time
    (seconds) over the loops."""
    store = RedisStore.from_url(url, namespace=namespace)
    op = make_ops(store, kind)
    if kind == "raw":
        for name in ("reserve", "commit"):
            await store.client.script_load(_SCRIPTS[name].source)
    await asyncio.gather(*(op(new_id()) for _ in range(tasks)))  # open connections
    if ready is not None:
        await ready()
    count = 0
    cpu_at_start = time.process_time()
    until = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() < until:
            await op(new_id())
            count += 1

    try:
        await asyncio.gather(*(loop() for _ in range(tasks)))
        cpu = time.process_time() - cpu_at_start
    finally:
        await store.aclose()
    return count, cpu


def process_main(url: str, namespace: str, kind: str, tasks: int, seconds: float,
                 ready: Any, go: Any, results: Any) -> None:
    async def wait_for_go() -> None:
        ready.put(os.getpid())
        await asyncio.to_thread(go.wait)

    results.put(asyncio.run(run_tasks(url, namespace, kind, tasks, seconds, wait_for_go)))


async def script_stats(url: str) -> tuple[int, int]:
    """Scripts run so far on the server (EVALSHA + EVAL calls), and the server's CPU time in
    them (microseconds)."""
    store = RedisStore.from_url(url)
    try:
        info = await store.client.info("commandstats")
    finally:
        await store.aclose()
    stats = [info.get(f"cmdstat_{name}", {}) for name in ("evalsha", "eval")]
    return (sum(int(s.get("calls", 0)) for s in stats), sum(int(s.get("usec", 0)) for s in stats))


async def measure(
    url: str, namespace: str, kind: str, shape: str, seconds: float
) -> dict[str, Any]:
    before = (0, 0)

    async def warmed_up() -> None:  # every connection is open: count from here
        nonlocal before
        before = await script_stats(url)

    if shape == PROCESSES:
        ctx = multiprocessing.get_context("spawn")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=process_main,
                             args=(url, namespace, kind, 50, seconds, ready, go, results))
                 for _ in range(4)]
        for proc in procs:
            proc.start()
        for _ in procs:  # every process imported, connected and warmed up
            await asyncio.to_thread(ready.get, True, 60)
        await warmed_up()
        go.set()
        done = [await asyncio.to_thread(results.get, True, 60) for _ in procs]
        for proc in procs:
            proc.join()
        ops, cpu = sum(n for n, _ in done), sum(c for _, c in done)
    else:
        tasks = 1 if shape == "1 task" else 50
        ops, cpu = await run_tasks(url, namespace, kind, tasks, seconds, warmed_up)
    calls, usec = (after - start for after, start in zip(await script_stats(url), before,
                                                         strict=True))
    return {"kind": kind, "shape": shape, "ops_per_s": ops / seconds,
            "round_trips_per_op": calls / (2 * ops) if ops else None,
            "server_us_per_op": usec / (2 * ops) if ops else None,
            "client_us_per_pair": cpu * 1e6 / ops if ops else None}


MINIMAL = "return redis.call('INCR', KEYS[1])"
CEILINGS = {
    "EVALSHA minimal script": lambda prefix, sha: [sha, "1", prefix + "k"],
    "EVALSHA outlay reserve": lambda prefix, sha: [
        sha, "5", prefix + "r:__rand_int__", prefix + "l:usd", prefix + "z:usd",
        prefix + "l:calls", prefix + "z:calls", *settings(prefix), "__rand_int__",
        *RESERVE_ARGS],
}


#: The Redis calls the store's layout makes for a batch of reserves and commits (common.lua), and
#: nothing else: no checks, no arithmetic, no migration or pruning of expired holds. Per batch,
#: each limit's hash read (HMGET) and its expired holds looked up (ZRANGEBYSCORE), then written
#: (HSET); per reserve its record read (GET), one hold per limit added (ZADD) and the record
#: written (SET PX); per commit its record read and unpacked, its holds taken out (ZREM) and the
#: ended record written. The same payload as the store's ``batch`` script (ARGV[1..4] the
#: store's settings, ARGV[5] the operations as JSON).
BARE_CALLS: Final = """
local P, RETAIN_MS = ARGV[1], ARGV[2]
local ops = cjson.decode(ARGV[5])
local seen = {}
local function limit(name)
  if not seen[name] then
    seen[name] = true
    redis.call('HMGET', P .. 'l:' .. name, 'cap', 'spent', 'held', 'u', 'p', 't', 'v', 'x')
    redis.call('ZRANGEBYSCORE', P .. 'z:' .. name, '-inf', 0)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000
local replies = {}
for i, op in ipairs(ops) do
  local a = op[2]
  local rid = a[1]
  local rk = P .. 'r:' .. rid
  local s = redis.call('GET', rk)
  if op[1] == 'reserve' then
    local exp = now + tonumber(a[2])
    local record = {exp, now}
    for j = 1, tonumber(a[3]) do
      local b = 3 + (j - 1) * 7
      local name, amount = a[b + 1], (a[b + 2] == 'i' and a[b + 3] or a[b + 4])
      limit(name)
      redis.call('ZADD', P .. 'z:' .. name, exp, amount .. ':' .. rid)
      record[#record + 1], record[#record + 2], record[#record + 3] = name, amount, a[b + 2]
    end
    redis.call('SET', rk, cmsgpack.pack(unpack(record)), 'PX', tonumber(a[2]) + RETAIN_MS)
  else
    local r = {cmsgpack.unpack(s)}
    for k = 3, #r - 2, 3 do
      limit(r[k])
      redis.call('ZREM', P .. 'z:' .. r[k], r[k + 1] .. ':' .. rid)
    end
    redis.call('SET', rk, 'committed', 'PX', RETAIN_MS)
  end
  replies[i] = {'ok'}
end
for name in pairs(seen) do
  redis.call('HSET', P .. 'l:' .. name, 'spent', '0', 'held', '0', 't', tostring(now))
end
return replies
"""
FLOOR_BATCH: Final = 12
"""Reserves per batch in ``floor`` (and as many commits, of the batch before's): about the
share of one round trip with 50 tasks and two round trips in flight."""


async def floor(url: str, batches: int) -> dict[str, float]:
    """The server's CPU time per reserve + commit pair for outlay's ``batch`` script and for
    ``BARE_CALLS``, driven alike by one connection (alternating rounds, best of each): what the
    layout costs the server, as against what the store's logic adds. ``1e6 / us`` is the most
    pairs per second a server could run if it did nothing else."""
    found: dict[str, list[float]] = {"batch": [], "bare": []}
    store = RedisStore.from_url(url, namespace=f"floor-{uuid.uuid4().hex[:8]}")
    try:
        await store.set_limit("usd", Decimal("9000000"))
        await store.set_limit("calls", 10**15)
        client, prefix = store.client, "{" + store.namespace + "}:"
        shas = {"batch": _SCRIPTS["batch"].sha,
                "bare": await client.script_load(BARE_CALLS)}
        await client.script_load(_SCRIPTS["batch"].source)
        store_args = settings(prefix)
        for _ in range(5):
            for kind, sha in shas.items():
                live: list[str] = []
                usec = (await script_stats(url))[1]
                for last in [False] * batches + [True]:  # the last commits the reserves left
                    new = [] if last else [new_id() for _ in range(FLOOR_BATCH)]
                    ops = ([_frame("reserve", [rid, *RESERVE_ARGS]) for rid in new]
                           + [_frame("commit", [rid, *COMMIT_ARGS]) for rid in live])
                    replies = await client.evalsha(sha, 1, prefix + "r:" + (new or live)[0],
                                                   *store_args, "[" + ",".join(ops) + "]")
                    assert all(reply[0] == b"ok" for reply in replies), replies
                    live = new
                usec = (await script_stats(url))[1] - usec
                found[kind].append(usec / (batches * FLOOR_BATCH))
    finally:
        await store.aclose()
    return {kind: min(runs) for kind, runs in found.items()}


async def ceiling(url: str, namespace: str, name: str, requests: int) -> float:
    """Scripts per second from ``redis-benchmark -c 50`` (unpipelined) on the same server."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("no redis-benchmark binary on PATH")
    store = RedisStore.from_url(url, namespace=namespace)
    try:
        await store.set_limit("usd", Decimal("9000000"))
        await store.set_limit("calls", 10**15)
        source = MINIMAL if name == "EVALSHA minimal script" else _SCRIPTS["reserve"].source
        sha = await store.client.script_load(source)
    finally:
        await store.aclose()
    parts = urlsplit(url)
    command = [binary, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379),
               "--csv", "-n", str(requests), "-c", "50", "-r", "1000000000"]
    if parts.path.strip("/"):
        command += ["--dbnum", parts.path.strip("/")]
    command += ["EVALSHA", *CEILINGS[name]("{" + namespace + "}:", sha)]
    out = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                  check=True)
    row = out.stdout.strip().splitlines()[-1].split(",")
    return float(row[1].strip('"'))


async def bench(url: str, seconds: float, rounds: int) -> list[dict[str, Any]]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(url, namespace=namespace)
    await store.set_limit("usd", Decimal("9000000"))
    await store.set_limit("calls", 10**15)
    await store.aclose()
    rows = []
    requests = 20_000 if rounds == 1 else 60_000
    for name in CEILINGS:
        found = sorted([await ceiling(url, f"ceiling-{uuid.uuid4().hex[:8]}", name, requests)
                        for _ in range(rounds)])
        print(f"  redis-benchmark -c 50 {name:<24} {found[len(found) // 2]:>9,.0f} scripts/s",
              flush=True)
        rows.append({"kind": "redis-benchmark", "shape": name, "ops_per_s": found[len(found) // 2],
                     "best_ops_per_s": found[-1], "runs_ops_per_s": found,
                     "round_trips_per_op": 1.0, "server_us_per_op": None,
                     "client_us_per_pair": None})
    server = await floor(url, 400)
    for kind, name in (("batch", "outlay batch script"), ("bare", "bare Redis calls")):
        us = server[kind]
        print(f"  server alone, {name:<24} {us:>6.1f} us/pair: {1e6 / us:>9,.0f} pairs/s at most",
              flush=True)
        rows.append({"kind": "server alone", "shape": name, "ops_per_s": 1e6 / us,
                     "best_ops_per_s": 1e6 / us, "round_trips_per_op": 1 / (2 * FLOOR_BATCH),
                     "server_us_per_op": us / 2, "client_us_per_pair": None})
    for shape in ("1 task", "50 tasks", PROCESSES):
        runs: dict[str, list[dict[str, Any]]] = {"raw": [], "queue": [], "store": []}
        for _ in range(rounds):  # alternate, so drifting load hits both alike
            for kind in runs:
                row = await measure(url, namespace, kind, shape, seconds)
                runs[kind].append(row)
                us = row["server_us_per_op"] or 0.0
                print(f"  {shape:<24} {kind:<6} {row['ops_per_s']:>9,.0f} res/s "
                      f"{us:>5.1f} us/op in Redis {row['client_us_per_pair'] or 0.0:>6.1f} "
                      "us/pair in the client", flush=True)
        for kind_runs in runs.values():
            kind_runs.sort(key=lambda r: r["ops_per_s"])
            row = dict(kind_runs[len(kind_runs) // 2])  # the median run
            row["best_ops_per_s"] = kind_runs[-1]["ops_per_s"]
            row["runs_ops_per_s"] = [r["ops_per_s"] for r in kind_runs]
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 0.5 s run per measurement")
    parser.add_argument("--url", help="an existing Redis (default: start our own)")
    args = parser.parse_args()
    seconds, rounds = (0.5, 1) if args.quick else (1.5, 5)
    print(f"redis-py reply parser: {PARSER}", flush=True)
    proc = None
    with tempfile.TemporaryDirectory() as directory:
        url = args.url
        if url is None:
            proc, url = start_redis(directory)
        try:
            rows = asyncio.run(bench(url, seconds, rounds))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
    raw = {r["shape"]: r for r in rows if r["kind"] == "raw"}
    ceilings = {r["shape"]: r["ops_per_s"] for r in rows if r["kind"] == "redis-benchmark"}
    print()
    for name, value in ceilings.items():
        print(f"ceiling: redis-benchmark -c 50 {name}: {value:,.0f} scripts/s")
    minimal = next(iter(ceilings.values()))
    for row in rows:
        if row["kind"] == "server alone":  # the server's CPU per pair, as if it did nothing else
            row["share_of_ceilings"] = {name: row["ops_per_s"] / value
                                        for name, value in ceilings.items()}
            print(f"server alone: {row['shape']}: {2 * row['server_us_per_op']:.1f} us/pair, "
                  f"at most {row['ops_per_s']:,.0f} pairs/s = {row['ops_per_s'] / minimal:.0%} "
                  "of the minimal ceiling")
    print(f"\n{'shape':<24} {'kind':<6} {'median/s':>9} {'of raw':>7} {'best/s':>9} {'of raw':>7} "
          f"{'RT/op':>6} {'us/op':>6} {'us/pair':>8} {'of minimal':>10} {'of reserve':>10}")
    for row in rows:
        if row["kind"] in ("redis-benchmark", "server alone"):
            continue
        base = raw[row["shape"]]
        share = row["ops_per_s"] / base["ops_per_s"] if base["ops_per_s"] else 0.0
        best = row["best_ops_per_s"] / base["best_ops_per_s"] if base["best_ops_per_s"] else 0.0
        row["share_of_raw"], row["best_share_of_raw"] = share, best
        of = [row["ops_per_s"] / value for value in ceilings.values()]
        row["share_of_ceilings"] = dict(zip(ceilings, of, strict=True))
        rt, us, client = (row["round_trips_per_op"], row["server_us_per_op"],
                          row["client_us_per_pair"])
        print(f"{row['shape']:<24} {row['kind']:<6} {row['ops_per_s']:>9,.0f} {share:>6.0%} "
              f"{row['best_ops_per_s']:>9,.0f} {best:>6.0%} "
              f"{'-' if rt is None else format(rt, '.2f'):>6} "
              f"{'-' if us is None else format(us, '.1f'):>6} "
              f"{'-' if client is None else format(client, '.1f'):>8} "
              f"{of[0]:>9.0%} {of[1]:>9.0%}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "redis", "seconds_per_measurement": seconds, "rounds": rounds,
        "note": "ops_per_s is the median of the rounds, best_ops_per_s the best; raw and "
                "store alternate; res/s = reserve + commit pairs per second; us/op = the "
                "server's CPU per reserve or commit; us/pair = the client processes' CPU per "
                "pair; redis-benchmark rows are scripts per second (the ceiling)",
        "python": sys.version.split()[0], "reply_parser": PARSER,
        "machine": platform.machine(), "cpus": os.cpu_count(), "rows": rows,
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
