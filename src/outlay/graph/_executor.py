"""Run compositions under anyio, optionally charging declared stage costs to a ``Budget``.

``prepare`` compiles a composition into a tree of small runners once: every stage id is looked
up, every worst case computed, so a malformed composition is refused before anything runs or is
charged. Running is then plain awaits: a ``Sequential`` awaits its children in the caller's
task; concurrent nodes start one task per branch (a plain asyncio task inside an anyio cancel
scope on asyncio, an anyio task on trio, where the last branch runs in the caller's task); a
``Map`` starts ``max_concurrency`` workers, not a task per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from .._core import Budget, BudgetExceeded, CompositionError
from ._accounts import Account, BudgetAccount, Pool, Ticket
from ._cost import FREE, Cost, Reported
from ._nodes import (
    Branch,
    Const,
    Fanout,
    Let,
    Map,
    Merge,
    Node,
    Parallel,
    Retry,
    Sequential,
    Stage,
    parse_composition,
)
from ._plan import Estimate, WorstCase, refuse
from ._registry import StageRegistry, StageSpec

_Call = Callable[[Any], Awaitable[Any]]


class _Runner:
    """A compiled node. ``direct`` is set for stages: the bare call, used when not charging."""

    __slots__ = ("direct", "worst")

    def __init__(self, worst: Cost) -> None:
        self.worst = worst
        self.direct: _Call | None = None

    async def run(self, value: Any, account: Account | None) -> Any:
        raise NotImplementedError


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only leaf exception of a (nested) group, or None if there are several."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


async def _gather(
    runners: Sequence[_Runner], inputs: Sequence[Any], account: Account | None
) -> list[Any]:
    """Run ``runners[i]`` on ``inputs[i]`` concurrently; results in order.

    The first failure cancels the rest; a single failure is raised as itself, several as an
    ``ExceptionGroup``. On asyncio see ``_gather_asyncio``. On trio the branches are anyio
    tasks and the last runs in the calling task: ``n`` runners cost ``n - 1`` tasks. Either
    way anyio's cancellation rules hold inside stages: a shielded scope stays shielded (native
    ``asyncio.TaskGroup`` children are cancelled through shields, so it is not used).
    """
    count = len(runners)
    if count == 1:
        return [await runners[0].run(inputs[0], account)]
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop here: trio
        task = None
    if task is not None:
        return await _gather_asyncio(runners, inputs, account, task.get_loop())
    results: list[Any] = [None] * count

    async def one(index: int) -> None:
        results[index] = await runners[index].run(inputs[index], account)

    error: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:
            start = group.start_soon
            for index in range(count - 1):
                start(one, index)
            await one(count - 1)
    except BaseExceptionGroup as exc:
        error = _sole_error(exc)
        if error is None:
            raise
    if error is not None:
        raise error  # outside the handler, so it does not gain the group as its context
    return results


async def _gather_asyncio(
    runners: Sequence[_Runner],
    inputs: Sequence[Any],
    account: Account | None,
    loop: asyncio.AbstractEventLoop,
) -> list[Any]:
    """``_gather`` on asyncio: one plain asyncio task per branch, each inside its own anyio
    ``CancelScope``, several times cheaper than an anyio task group.

    Branches are cancelled only through those scopes, never with ``Task.cancel()``, so anyio's
    rules hold inside stages (shielded work finishes). The first failure cancels the other
    branches; branches not yet started do not start. If the caller is cancelled, every branch
    is cancelled and waited for before the cancellation propagates.
    """
    count = len(runners)
    results: list[Any] = [None] * count
    scopes: list[anyio.CancelScope] = []
    errors: list[BaseException] = []
    state = {"stopping": False, "left": count}
    done: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not state["stopping"]:
            state["stopping"] = True
            for scope in scopes:
                scope.cancel()

    async def one(index: int) -> None:
        try:
            if not state["stopping"]:
                with anyio.CancelScope() as scope:
                    scopes.append(scope)
                    results[index] = await runners[index].run(inputs[index], account)
        except BaseException as exc:
            errors.append(exc)
            stop()
        finally:
            state["left"] -= 1
            if not state["left"] and not done.done():
                done.set_result(None)

    create = loop.create_task
    tasks = [create(one(index)) for index in range(count)]
    cancelled: BaseException | None = None
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError as exc:
            cancelled = exc
            stop()
    del tasks
    # Branch errors win over the caller's cancellation, as in anyio and asyncio task groups
    # (a cancelling anyio scope cancels again at the next checkpoint).
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise BaseExceptionGroup("several branches failed", errors)
    if cancelled is not None:
        raise cancelled
    return results


async def _held(
    account: Account,
    worst: Cost,
    body: Callable[[Any, Account], Awaitable[Any]],
    value: Any,
) -> Any:
    """Take ``worst`` from ``account`` at once, run ``body`` drawing from that hold, then settle
    the hold at what was used; the rest comes back, on success, error and cancellation."""
    ticket = await account.take(worst)
    pool = Pool(account, worst)
    try:
        return await body(value, pool)
    finally:
        with anyio.CancelScope(shield=True):
            await account.settle(ticket, pool.spent_cost())


class _StageRunner(_Runner):
    __slots__ = ("call", "cost", "free", "id")

    def __init__(self, spec: StageSpec, config: Any) -> None:
        super().__init__(spec.cost)
        fn = spec.fn
        call: _Call
        if spec.is_async:
            call = (lambda value: fn(value, config)) if spec.takes_config else fn
        else:
            call = _in_thread(fn, (config,) if spec.takes_config else ())
        self.id = spec.id
        self.cost = spec.cost
        self.free = not spec.cost
        self.call = call
        self.direct = call

    async def run(self, value: Any, account: Account | None) -> Any:
        if account is None or self.free:
            out = await self.call(value)
            if type(out) is Reported:
                if account is not None and out.cost:
                    raise ValueError(f"stage {self.id!r} declares no cost but reported "
                                     f"{out.cost!r}")
                return out.value
            return out
        cost = self.cost
        ticket = account.take_nowait(cost) or await account.take(cost)
        try:
            out = await self.call(value)
        except BaseException:
            # A stage that started keeps its charge: it failed, or was cancelled mid-flight.
            with anyio.CancelScope(shield=True):
                await account.settle(ticket, cost)
            raise
        if type(out) is Reported:
            return await self._reconcile(account, ticket, out)
        owner = ticket.owner
        if type(owner) is Pool:
            owner.settle_local(ticket, cost)
        else:
            await owner.settle(ticket, cost)
        return out

    async def _reconcile(self, account: Account, ticket: Ticket, out: Reported) -> Any:
        extra = sorted(out.cost.keys() - self.cost.keys())
        if extra:
            await account.settle(ticket, self.cost)
            raise ValueError(f"stage {self.id!r} reported cost in undeclared units {extra}; "
                             f"it declares {sorted(self.cost)}")
        await account.settle(ticket, out.cost)
        return out.value


def _in_thread(fn: Callable[..., Any], args: tuple[Any, ...]) -> _Call:
    """A plain function as an async call that runs it in a worker thread."""

    async def call(value: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(fn, value, *args))

    return call


class _ConstRunner(_Runner):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        super().__init__(FREE)
        self.value = value

    async def run(self, value: Any, account: Account | None) -> Any:
        return self.value


class _SequentialRunner(_Runner):
    __slots__ = ("children",)

    def __init__(self, children: list[_Runner], worst: Cost) -> None:
        super().__init__(worst)
        self.children = children

    async def run(self, value: Any, account: Account | None) -> Any:
        if account is None:
            for child in self.children:
                direct = child.direct
                if direct is None:
                    value = await child.run(value, None)
                else:
                    value = await direct(value)
                    if type(value) is Reported:
                        value = value.value
            return value
        for child in self.children:
            value = await child.run(value, account)
        return value


class _ParallelRunner(_Runner):
    __slots__ = ("children", "names")

    def __init__(self, names: list[str], children: list[_Runner], worst: Cost) -> None:
        super().__init__(worst)
        self.names = names
        self.children = children

    async def run(self, value: Any, account: Account | None) -> Any:
        if account is None or not self.worst:
            return await self._run(value, account)
        return await _held(account, self.worst, self._run, value)

    async def _run(self, value: Any, account: Account | None) -> Any:
        if isinstance(value, Mapping):
            inputs = [value.get(name, value) for name in self.names]
        else:
            inputs = [value] * len(self.names)
        return dict(zip(self.names, await _gather(self.children, inputs, account), strict=True))


class _BranchRunner(_Runner):
    __slots__ = ("if_false", "if_true", "predicate")

    def __init__(self, predicate: _Runner, if_true: _Runner, if_false: _Runner,
                 worst: Cost) -> None:
        super().__init__(worst)
        self.predicate = predicate
        self.if_true = if_true
        self.if_false = if_false

    async def run(self, value: Any, account: Account | None) -> Any:
        flag = await self.predicate.run(value, account)
        if type(flag) is not bool:
            raise TypeError(f"a Branch predicate must return a bool, got {type(flag).__name__}")
        return await (self.if_true if flag else self.if_false).run(value, account)


class _FanoutRunner(_Runner):
    __slots__ = ("source", "targets")

    def __init__(self, source: _Runner, targets: list[_Runner], worst: Cost) -> None:
        super().__init__(worst)
        self.source = source
        self.targets = targets

    async def run(self, value: Any, account: Account | None) -> Any:
        if account is None or not self.worst:
            return await self._run(value, account)
        return await _held(account, self.worst, self._run, value)

    async def _run(self, value: Any, account: Account | None) -> Any:
        out = await self.source.run(value, account)
        return await _gather(self.targets, [out] * len(self.targets), account)


class _MergeRunner(_Runner):
    __slots__ = ("sources", "target")

    def __init__(self, sources: list[_Runner], target: _Runner, worst: Cost) -> None:
        super().__init__(worst)
        self.sources = sources
        self.target = target

    async def run(self, value: Any, account: Account | None) -> Any:
        if account is None or not self.worst:
            return await self._run(value, account)
        return await _held(account, self.worst, self._run, value)

    async def _run(self, value: Any, account: Account | None) -> Any:
        outs = await _gather(self.sources, [value] * len(self.sources), account)
        return await self.target.run(outs, account)


class _LetRunner(_Runner):
    __slots__ = ("bindings", "body", "names")

    def __init__(self, names: list[str], bindings: list[_Runner], body: _Runner,
                 worst: Cost) -> None:
        super().__init__(worst)
        self.names = names
        self.bindings = bindings
        self.body = body

    async def run(self, value: Any, account: Account | None) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise TypeError(f"a Let needs a mapping (or None) as input, got "
                            f"{type(value).__name__}")
        if account is None or not self.worst:
            return await self._run(value, account)
        return await _held(account, self.worst, self._run, value)

    async def _run(self, value: Mapping[str, Any], account: Account | None) -> Any:
        outs = await _gather(self.bindings, [value] * len(self.bindings), account)
        scope = dict(value)
        scope.update(zip(self.names, outs, strict=True))
        return await self.body.run(scope, account)


class _MapRunner(_Runner):
    __slots__ = ("item", "max_concurrency", "max_items")

    def __init__(self, item: _Runner, max_concurrency: int, max_items: int | None,
                 worst: Cost) -> None:
        super().__init__(worst)
        self.item = item
        self.max_concurrency = max_concurrency
        self.max_items = max_items

    async def run(self, value: Any, account: Account | None) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"a Map needs a list as input, got {type(value).__name__}")
        if self.max_items is not None and len(value) > self.max_items:
            raise ValueError(f"a Map declared max_items={self.max_items} got {len(value)} items")
        if account is None or not self.item.worst or not value:
            return await self._run(value, account)
        # The hold is for the items actually given, all at once: every item starts or none.
        return await _held(account, self.item.worst * len(value), self._run, value)

    async def _run(self, items: Sequence[Any], account: Account | None) -> list[Any]:
        count = len(items)
        results: list[Any] = [None] * count
        item = self.item
        workers = min(self.max_concurrency, count)
        if workers <= 1:
            for index, value in enumerate(items):
                results[index] = await item.run(value, account)
            return results
        indices = iter(range(count))

        async def work(_: Any) -> None:
            for index in indices:  # shared: each worker takes the next unstarted item
                results[index] = await item.run(items[index], account)

        worker = _Worker(work)
        await _gather([worker] * workers, [None] * workers, account)
        return results


class _Worker(_Runner):
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Awaitable[None]]) -> None:
        super().__init__(FREE)
        self.fn = fn

    async def run(self, value: Any, account: Account | None) -> Any:
        return await self.fn(value)


class _RetryRunner(_Runner):
    __slots__ = ("attempts", "delays", "node")

    def __init__(self, node: _Runner, attempts: int, delays: list[float], worst: Cost) -> None:
        super().__init__(worst)
        self.node = node
        self.attempts = attempts
        self.delays = delays

    async def run(self, value: Any, account: Account | None) -> Any:
        for attempt in range(self.attempts):
            try:
                return await self.node.run(value, account)
            except (BudgetExceeded, CompositionError):
                raise
            except Exception:
                if attempt + 1 == self.attempts:
                    raise
            delay = self.delays[attempt]
            if delay > 0:
                await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _compile(node: Node, worst: WorstCase, memo: dict[int, _Runner]) -> _Runner:
    """The runner for ``node``; runners are stateless, so a node object used twice shares one.

    Raises ``CompositionError`` (without a path; ``Plan`` adds it) for an unknown stage id or
    anything that is not a node.
    """
    found = memo.get(id(node))
    if found is not None:
        return found
    cost = worst(node)  # validates the node and its subtree

    def sub(child: Node) -> _Runner:
        return _compile(child, worst, memo)

    runner: _Runner
    kind = type(node)
    if kind is Stage:
        assert isinstance(node, Stage)
        runner = _StageRunner(worst.registry.spec(node.id), node.config)
    elif kind is Const:
        assert isinstance(node, Const)
        runner = _ConstRunner(node.value)
    elif kind is Sequential:
        assert isinstance(node, Sequential)
        runner = _SequentialRunner([sub(n) for n in node.stages], cost)
    elif kind is Parallel:
        assert isinstance(node, Parallel)
        runner = _ParallelRunner(list(node.branches), [sub(n) for n in node.branches.values()],
                                 cost)
    elif kind is Branch:
        assert isinstance(node, Branch)
        runner = _BranchRunner(sub(node.predicate), sub(node.if_true), sub(node.if_false), cost)
    elif kind is Fanout:
        assert isinstance(node, Fanout)
        runner = _FanoutRunner(sub(node.source), [sub(n) for n in node.targets], cost)
    elif kind is Merge:
        assert isinstance(node, Merge)
        runner = _MergeRunner([sub(n) for n in node.sources], sub(node.target), cost)
    elif kind is Retry:
        assert isinstance(node, Retry)
        runner = _RetryRunner(sub(node.stage), node.max_attempts, node.delays(), cost)
    elif kind is Let:
        assert isinstance(node, Let)
        runner = _LetRunner(list(node.bindings), [sub(n) for n in node.bindings.values()],
                            sub(node.body), cost)
    else:
        assert isinstance(node, Map)  # worst() refused every other type
        runner = _MapRunner(sub(node.node), node.max_concurrency, node.max_items, cost)
    memo[id(node)] = runner
    return runner


class Plan:
    """A composition checked against a registry and compiled, ready to run many times.

    ``estimate`` is its static worst case and ``units`` every cost unit its stages declare.
    Build one with ``Executor.prepare``.
    """

    __slots__ = ("_root", "composition", "estimate", "registry", "units")

    def __init__(self, composition: Node, registry: StageRegistry) -> None:
        worst = WorstCase(registry)
        try:
            self._root = _compile(composition, worst, {})
        except CompositionError:
            refuse(composition, registry)  # raises it again, saying where
            raise
        self.composition = composition
        self.registry = registry
        self.estimate = Estimate(self._root.worst, worst.unbounded(composition))
        self.units = frozenset(worst.units)


class Executor:
    """Runs compositions with the stages of ``registry``, charging nothing.

    A failure in a concurrent branch cancels its siblings; a single failure propagates as
    itself, several as an ``ExceptionGroup``. Cancelling ``run`` cancels every running stage.
    """

    def __init__(self, registry: StageRegistry) -> None:
        if not isinstance(registry, StageRegistry):
            raise TypeError(f"registry must be a StageRegistry, got {type(registry).__name__}")
        self.registry = registry

    def prepare(self, composition: Node | Plan | Mapping[str, Any] | str | bytes) -> Plan:
        """Check and compile ``composition`` (a node, or its JSON / Python form).

        Raises ``CompositionError`` for a malformed composition, an unknown node type or an
        unknown stage id. Nothing runs and nothing is charged.
        """
        if isinstance(composition, Plan):
            if composition.registry is not self.registry:
                raise CompositionError("this plan was prepared with another registry")
            return composition
        if isinstance(composition, Mapping | str | bytes):
            composition = parse_composition(composition)
        return Plan(composition, self.registry)

    async def run(
        self, composition: Node | Plan | Mapping[str, Any] | str | bytes, input: Any = None
    ) -> Any:
        """Run ``composition`` on ``input`` and return its output.

        ``CompositionError`` is raised before anything runs; stage errors propagate.
        """
        plan = self.prepare(composition)
        return await plan._root.run(input, None)


class BudgetedExecutor(Executor):
    """Runs compositions charging each stage's declared cost to ``budget`` before it runs.

    ``budget`` is the budget object (``outlay.Budget``, or one from ``Principals``): a stage's
    ``Cost`` is by unit (``Cost(usd=Decimal("0.02"), tokens=1500)``) and each unit is charged
    to every limit the budget maps it onto (its windows and its principal's ancestors) in one
    reservation, so it works on every store:

    - a stage is charged before it runs; if it does not fit, ``BudgetExceeded`` is raised and
      the stage never runs. It is settled at its declared cost, or at the ``Reported`` actual.
    - ``Parallel``, ``Fanout``, ``Merge``, ``Let`` and ``Map`` first hold the worst case of all
      their branches in one reservation (all-or-nothing): every branch starts, or none does.
      Stages inside draw from that hold; what is unused returns when the node ends.
    - A stage that fails, or is cancelled once started, keeps its charge. Branches cancelled
      because a sibling failed return what they had not started.

    Units follow the budget's rule: money (``Decimal``) in a unit the budget does not cap is
    refused, whole units it does not cap are not limited.
    """

    def __init__(self, registry: StageRegistry, budget: Budget) -> None:
        super().__init__(registry)
        if not isinstance(budget, Budget):
            raise TypeError(f"budget must be an outlay.Budget, got {type(budget).__name__}")
        self.budget = budget

    async def run(
        self,
        composition: Node | Plan | Mapping[str, Any] | str | bytes,
        input: Any = None,
        *,
        hold_worst_case: bool = False,
    ) -> Any:
        """Run ``composition`` on ``input``, charging the budget; see the class docstring.

        With ``hold_worst_case`` the whole composition's static worst case is held first, so a
        run that could not afford its worst case is refused (``BudgetExceeded``) before any
        stage runs; ``CompositionError`` if that worst case is unbounded.
        """
        plan = self.prepare(composition)
        account = BudgetAccount(self.budget)
        root = plan._root
        if hold_worst_case:
            if not plan.estimate.bounded:
                raise CompositionError(
                    "the worst case is unbounded (a Map without max_items at "
                    f"{', '.join(plan.estimate.unbounded)}); it cannot be held up front")
            if root.worst:
                return await _held(account, root.worst, root.run, input)
        return await root.run(input, account)

