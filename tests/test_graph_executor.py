"""Data flow through every node type, without a budget, on asyncio and trio."""

from __future__ import annotations

import threading
from itertools import pairwise
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from outlay import CompositionError
from outlay.graph import (
    Branch,
    Const,
    Cost,
    Executor,
    Fanout,
    Let,
    Map,
    Merge,
    Parallel,
    Reported,
    Retry,
    Sequential,
    Stage,
    StageRegistry,
)

pytestmark = pytest.mark.anyio


class Flaky(Exception):
    pass


@pytest.fixture
def registry() -> StageRegistry:
    registry = StageRegistry()
    calls: list[str] = []

    @registry.stage("inc")
    async def inc(x: int) -> int:
        calls.append("inc")
        return x + 1

    @registry.stage("double")
    async def double(x: int) -> int:
        return x * 2

    @registry.stage("add")
    async def add(x: int, config: Any) -> int:
        return x + int(config)

    @registry.stage("is_even")
    async def is_even(x: int) -> bool:
        return x % 2 == 0

    @registry.stage("total")
    async def total(xs: list[int]) -> int:
        return sum(xs)

    @registry.stage("describe")
    async def describe(scope: dict[str, Any]) -> str:
        return ",".join(f"{k}={scope[k]}" for k in sorted(scope))

    @registry.stage("thread_name")
    def thread_name(x: Any) -> str:  # a plain function runs in a worker thread
        return threading.current_thread().name

    @registry.stage("reports", cost=Cost(calls=1))
    async def reports(x: int) -> Reported:
        return Reported(x * 10, Cost(calls=1))

    registry.calls = calls  # type: ignore[attr-defined]
    return registry


async def test_stage_passes_input_and_config(registry: StageRegistry) -> None:
    executor = Executor(registry)
    assert await executor.run(Stage("inc"), 1) == 2
    assert await executor.run(Stage("add", 5), 1) == 6


async def test_sync_stage_runs_in_a_worker_thread(registry: StageRegistry) -> None:
    name = await Executor(registry).run(Stage("thread_name"), None)
    assert name != threading.current_thread().name


async def test_reported_value_is_unwrapped(registry: StageRegistry) -> None:
    assert await Executor(registry).run(Sequential([Stage("reports"), Stage("inc")]), 1) == 11
    assert await Executor(registry).run(Stage("reports"), 2) == 20


async def test_const_ignores_input(registry: StageRegistry) -> None:
    assert await Executor(registry).run(Const({"a": 1}), 99) == {"a": 1}


async def test_sequential_threads_each_output_into_the_next(registry: StageRegistry) -> None:
    comp = Sequential([Stage("inc"), Stage("double"), Stage("add", 3), Sequential([Stage("inc")])])
    assert await Executor(registry).run(comp, 1) == ((1 + 1) * 2 + 3) + 1


async def test_parallel_picks_named_inputs_and_keys_outputs(registry: StageRegistry) -> None:
    comp = Parallel({"a": Stage("inc"), "b": Stage("double"), "c": Stage("total")})
    out = await Executor(registry).run(comp, {"a": 1, "b": 10, "c": [1, 2]})
    assert out == {"a": 2, "b": 20, "c": 3}
    assert list(out) == ["a", "b", "c"]
    # without its name in a mapping input (or a non-mapping input) a branch gets it whole
    whole = Parallel({"x": Stage("describe"), "y": Const(0)})
    assert await Executor(registry).run(whole, {"a": 1}) == {"x": "a=1", "y": 0}
    assert await Executor(registry).run(Parallel({"p": Stage("inc"), "q": Stage("double")}),
                                        5) == {"p": 6, "q": 10}


async def test_parallel_branches_really_overlap(registry: StageRegistry) -> None:
    both = anyio.Event()
    arrived = 0

    async def meet(x: Any) -> str:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        await both.wait()  # deadlocks unless both branches run at once
        return "met"

    registry.register("meet", meet)
    out = await Executor(registry).run(Parallel({"a": Stage("meet"), "b": Stage("meet")}), 0)
    assert out == {"a": "met", "b": "met"}


async def test_branch_runs_the_arm_the_predicate_picks(registry: StageRegistry) -> None:
    comp = Branch(Stage("is_even"), Stage("double"), Stage("inc"))
    executor = Executor(registry)
    assert await executor.run(comp, 4) == 8  # the arm gets the original input
    assert await executor.run(comp, 3) == 4


async def test_branch_refuses_a_non_bool_predicate(registry: StageRegistry) -> None:
    with pytest.raises(TypeError, match="bool"):
        await Executor(registry).run(Branch(Stage("inc"), Const(1), Const(2)), 1)


async def test_fanout_feeds_the_source_output_to_every_target(registry: StageRegistry) -> None:
    comp = Fanout(Stage("inc"), [Stage("double"), Stage("inc"), Const("c")])
    assert await Executor(registry).run(comp, 1) == [4, 3, "c"]


async def test_merge_feeds_the_list_of_sources_to_the_target(registry: StageRegistry) -> None:
    comp = Merge([Stage("inc"), Stage("double"), Const(100)], Stage("total"))
    assert await Executor(registry).run(comp, 5) == 6 + 10 + 100


async def test_retry_retries_until_success(registry: StageRegistry) -> None:
    attempts = 0

    async def flaky(x: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise Flaky(attempts)
        return x

    registry.register("flaky", flaky)
    assert await Executor(registry).run(Retry(Stage("flaky"), max_attempts=3), 7) == 7
    assert attempts == 3


async def test_retry_gives_up_with_the_last_error(registry: StageRegistry) -> None:
    attempts = 0

    async def broken(x: int) -> int:
        nonlocal attempts
        attempts += 1
        raise Flaky(attempts)

    registry.register("broken", broken)
    with pytest.raises(Flaky, match="2"):
        await Executor(registry).run(Retry(Stage("broken"), max_attempts=2), 0)
    assert attempts == 2


def test_retry_delays_grow_by_backoff() -> None:
    assert Retry(Const(1), max_attempts=4, delay_ms=100, backoff=2.0).delays() == [0.1, 0.2, 0.4]
    assert Retry(Const(1), max_attempts=1).delays() == []


async def test_let_adds_bindings_to_the_input(registry: StageRegistry) -> None:
    comp = Let({"b": Const(20), "c": Parallel({"n": Const(3)})}, Stage("describe"))
    out = await Executor(registry).run(comp, {"a": 1, "b": 2})
    assert out == "a=1,b=20,c={'n': 3}"  # bindings win on a clash
    assert await Executor(registry).run(Let({"x": Const(1)}, Stage("describe")), None) == "x=1"


async def test_let_refuses_a_non_mapping_input(registry: StageRegistry) -> None:
    with pytest.raises(TypeError, match="mapping"):
        await Executor(registry).run(Let({"x": Const(1)}, Const(0)), [1])


async def test_map_keeps_order_and_bounds_concurrency(registry: StageRegistry) -> None:
    running = peak = 0
    release = anyio.Event()

    async def slow(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return x * x

    registry.register("slow", slow)
    result: list[int] = []

    async def run() -> None:
        result.extend(await Executor(registry).run(Map(Stage("slow"), max_concurrency=3),
                                                   list(range(10))))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        assert running == 3  # exactly max_concurrency started, the rest wait
        release.set()
    assert peak == 3
    assert result == [x * x for x in range(10)]


async def test_map_edge_cases(registry: StageRegistry) -> None:
    executor = Executor(registry)
    assert await executor.run(Map(Stage("inc"), 1), [1, 2, 3]) == [2, 3, 4]
    assert await executor.run(Map(Stage("inc"), 4), []) == []
    assert await executor.run(Map(Stage("inc"), 4), (1,)) == [2]
    with pytest.raises(TypeError, match="list"):
        await executor.run(Map(Stage("inc"), 4), "abc")
    with pytest.raises(ValueError, match="max_items=2"):
        await executor.run(Map(Stage("inc"), 4, max_items=2), [1, 2, 3])
    assert registry.calls == ["inc"] * 4  # type: ignore[attr-defined]


async def test_a_failing_branch_cancels_its_siblings_and_propagates_itself(
    registry: StageRegistry,
) -> None:
    cancelled = False

    async def blocked(x: Any) -> None:
        nonlocal cancelled
        try:
            await anyio.sleep_forever()
        finally:
            cancelled = True

    async def fail(x: Any) -> None:
        await anyio.wait_all_tasks_blocked()
        raise Flaky("boom")

    registry.register("blocked", blocked)
    registry.register("fail", fail)
    with pytest.raises(Flaky, match="boom"):  # not wrapped in an ExceptionGroup
        await Executor(registry).run(Parallel({"a": Stage("blocked"), "b": Stage("fail")}), 0)
    assert cancelled


async def test_several_failures_propagate_as_a_group(registry: StageRegistry) -> None:
    both_started = anyio.Event()

    async def fail_first(x: Any) -> None:
        with anyio.CancelScope(shield=True):  # fails even though its sibling failed first
            await both_started.wait()
        raise Flaky("first")

    async def fail_second(x: Any) -> None:
        await anyio.wait_all_tasks_blocked()
        both_started.set()
        raise Flaky("second")

    registry.register("first", fail_first)
    registry.register("second", fail_second)
    with pytest.raises(ExceptionGroup) as info:
        await Executor(registry).run(Merge([Stage("first"), Stage("second")], Const(0)), 1)
    assert sorted(str(e) for e in info.value.exceptions) == ["first", "second"]


async def test_unknown_stage_id_is_refused_before_anything_runs(registry: StageRegistry) -> None:
    comp = Sequential([Stage("inc"), Parallel({"x": Stage("inc"), "y": Stage("nope")})])
    with pytest.raises(CompositionError, match="unknown stage id 'nope'") as info:
        await Executor(registry).run(comp, 1)
    assert info.value.path == "root.stages[1].branches['y']"
    assert registry.calls == []  # type: ignore[attr-defined]


async def test_json_and_prepared_plans_run(registry: StageRegistry) -> None:
    executor = Executor(registry)
    text = '{"type": "sequential", "stages": [{"type": "stage", "id": "inc"}]}'
    assert await executor.run(text, 1) == 2
    plan = executor.prepare(Sequential([Stage("inc"), Stage("double")]))
    assert [await executor.run(plan, n) for n in (1, 2)] == [4, 6]
    with pytest.raises(CompositionError, match="another registry"):
        await Executor(StageRegistry()).run(plan, 1)
    with pytest.raises(CompositionError, match="malformed"):
        await executor.run({"type": "teleport"}, 1)
    with pytest.raises(CompositionError, match="not a composition node"):
        await executor.run(42, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Executor({})  # type: ignore[arg-type]


async def test_cancelling_the_run_cancels_running_stages(registry: StageRegistry) -> None:
    async def forever(x: Any) -> None:
        await anyio.sleep_forever()

    registry.register("forever", forever)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(Executor(registry).run,
                             Map(Stage("forever"), 4), [1, 2, 3, 4, 5])
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
    assert scope.cancelled_caught


async def test_anyio_primitives_work_inside_concurrent_branches(registry: StageRegistry) -> None:
    # On asyncio branches are native tasks; anyio scopes, threads and events must still work.
    async def scoped(x: Any) -> str:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await anyio.sleep_forever()
        await anyio.to_thread.run_sync(lambda: None)
        return "ok" if scope.cancelled_caught else "no"

    registry.register("scoped", scoped)
    comp = Parallel({"a": Stage("scoped"), "b": Stage("scoped"), "c": Stage("thread_name")})
    out = await Executor(registry).run(comp, 0)
    assert (out["a"], out["b"]) == ("ok", "ok")


async def test_shielded_work_in_a_branch_survives_a_failing_sibling(
    registry: StageRegistry,
) -> None:
    # Regression guard: branches must be anyio tasks. Native asyncio.TaskGroup children are
    # cancelled with task.cancel(), which breaks through anyio shields; a budget commit to a
    # remote store under such a shield would then be lost.
    in_shield = anyio.Event()
    gate = anyio.Event()
    log: list[str] = []

    async def careful(x: Any) -> None:
        with anyio.CancelScope(shield=True):
            in_shield.set()
            await gate.wait()
            log.append("finished shielded work")

    async def fail(x: Any) -> None:
        await in_shield.wait()
        raise Flaky("sibling")

    registry.register("careful", careful)
    registry.register("fail", fail)

    async def run() -> None:
        with pytest.raises(Flaky):
            await Executor(registry).run(Parallel({"a": Stage("careful"), "b": Stage("fail")}))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert log == ["finished shielded work"]


async def test_cancelling_the_run_lets_shielded_branch_work_finish(
    registry: StageRegistry,
) -> None:
    in_shield = anyio.Event()
    gate = anyio.Event()
    log: list[str] = []

    async def careful(x: Any) -> None:
        with anyio.CancelScope(shield=True):
            in_shield.set()
            await gate.wait()
            log.append("finished shielded work")

    blocked_cancelled = anyio.Event()

    async def blocked(x: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            log.append("blocked cancelled")
            blocked_cancelled.set()

    registry.register("careful", careful)
    registry.register("blocked", blocked)
    comp = Parallel({"a": Stage("careful"), "b": Stage("blocked")})
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(Executor(registry).run, comp)
            await in_shield.wait()
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            with anyio.CancelScope(shield=True):
                await blocked_cancelled.wait()
                for _ in range(10):  # the run keeps waiting for the shielded branch
                    await anyio.lowlevel.checkpoint()
                assert log == ["blocked cancelled"]
                gate.set()
    assert scope.cancelled_caught
    assert log == ["blocked cancelled", "finished shielded work"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Task.cancel() is asyncio's own API
async def test_native_task_cancel_cancels_and_awaits_every_branch(
    registry: StageRegistry,
) -> None:
    import asyncio

    log: list[str] = []

    async def blocked(x: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            log.append(f"cancelled {x}")

    registry.register("blocked", blocked)
    comp = Parallel({"a": Stage("blocked"), "b": Stage("blocked"), "c": Stage("blocked")})
    task = asyncio.create_task(Executor(registry).run(comp, {"a": 1, "b": 2, "c": 3}))
    await anyio.wait_all_tasks_blocked()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(log) == ["cancelled 1", "cancelled 2", "cancelled 3"]


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}),
                  id="trio-mockclock")],
)  # a virtual clock: the waits are checked exactly, and nothing really sleeps
async def test_retry_waits_between_attempts_with_backoff(registry: StageRegistry) -> None:
    attempts: list[float] = []

    async def flaky(x: int) -> int:
        attempts.append(trio.current_time())
        if len(attempts) < 4:
            raise Flaky
        return x

    registry.register("flaky", flaky)
    comp = Retry(Stage("flaky"), max_attempts=4, delay_ms=100, backoff=2.0)
    assert await Executor(registry).run(comp, 5) == 5
    gaps = [round(b - a, 6) for a, b in pairwise(attempts)]
    assert gaps == [0.1, 0.2, 0.4]
