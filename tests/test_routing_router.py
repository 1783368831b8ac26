"""``Router``: budgets read per candidate, holds, fallback that checks again, records, logs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from outlay import (
    Backend,
    BackendKind,
    Budget,
    BudgetExceeded,
    ConfigurationError,
    CostRates,
    Ladder,
    LimitSpec,
    MemoryStore,
    NoRoute,
    Principals,
    RemainingBudget,
    RouteChoice,
    Router,
    TokenPrices,
    Window,
    Work,
    read_remaining,
    store_from_url,
)

pytestmark = pytest.mark.anyio

D = Decimal
CALL = Work(input_tokens=10_000, max_output_tokens=2_000, label="call")
PREMIUM = TokenPrices(D("5"), D("25"))  # 0.10 per CALL
CHEAP = TokenPrices(D("1"), D("5"))  # 0.02 per CALL


def budgets(*caps: tuple[str, str]) -> list[Budget]:
    owner = Principals(MemoryStore(), run_id="r1")
    return [owner.get(name, caps=[LimitSpec("usd", Window.run(), D(cap))]) for name, cap in caps]


async def spent(budget: Budget) -> Decimal:
    (usage,) = await budget.usage()
    return Decimal(usage.spent)


class ProviderError(Exception):
    """What a provider SDK raises for a 5xx."""


async def test_run_holds_the_worst_case_and_commits_what_was_reported() -> None:
    (team,) = budgets(("team:a", "1.00"))
    router = Router([Backend("premium", BackendKind.CLOUD, prices=PREMIUM)], budget=team)

    async def call(choice: RouteChoice) -> str:
        (usage,) = await team.usage()
        assert usage.held == D("0.10")  # the worst case is held while the call runs
        choice.report(D("0.07"))
        return f"answer from {choice.backend.model_name}"

    routed = await router.run(CALL, call)
    assert routed.value == "answer from premium"
    assert routed.charged == D("0.07")
    assert await spent(team) == D("0.07")
    (usage,) = await team.usage()
    assert usage.held == 0


async def test_provider_error_falls_back_and_checks_the_fallbacks_own_budget() -> None:
    """The LiteLLM bug (issue #41344): the budget was checked against the requested model,
    not the fallback that billed, so an exhausted key kept spending. Here the fallback's own
    budget is empty: it is refused and never called, and nothing is charged anywhere."""
    premium_key, backup_key = budgets(("key:premium", "5.00"), ("key:backup", "0.01"))
    router = Router([
        Backend("premium", BackendKind.CLOUD, prices=PREMIUM, budget=premium_key),
        Backend("backup", BackendKind.CLOUD, prices=CHEAP, budget=backup_key),
    ], order="listed")
    called: list[str] = []

    async def call(choice: RouteChoice) -> str:
        called.append(choice.backend.name)
        raise ProviderError("503")

    with capture_logs() as logs, pytest.raises(NoRoute) as refused:
        await router.run(CALL, call)
    assert called == ["premium"]
    assert refused.value.decision.reasons() == {
        "premium": "failed with ProviderError; fell back",
        "backup": "worst case 0.02 usd is over what its budget has left: 0.01 usd left (100% "
                  "of the tightest cap, key:backup/usd/run:r1)",
    }
    assert isinstance(refused.value.__cause__, ProviderError)
    assert await spent(premium_key) == 0
    assert await spent(backup_key) == 0
    route = [e for e in logs if e["event"].startswith("outlay.route.")]
    assert [e["event"] for e in route] == [
        "outlay.route.chosen", "outlay.route.fallback", "outlay.route.none"]
    assert route[0]["chosen"] == "premium"
    assert route[0]["estimate"] == "0.1"
    assert route[1]["candidate"] == "premium"
    assert route[1]["error_type"] == "ProviderError"
    assert route[2]["log_level"] == "warning"
    assert set(route[2]["refused"]) == {"premium", "backup"}
    assert "503" not in str(logs)  # provider messages stay out of the records


async def test_fallback_re_reads_the_budget_after_a_failed_call_spent() -> None:
    """The consumer reserves on its own (``hold=False``); a failed attempt that was billed
    leaves less, and the next candidate is checked against what is left now."""
    (team,) = budgets(("team:a", "0.15"))
    router = Router([Backend("a", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("b", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("c", BackendKind.CLOUD, prices=CHEAP)], budget=team)

    async def call(choice: RouteChoice) -> str:
        async with team.reserve({"usd": choice.estimate}) as held:
            await held.commit({"usd": D("0.10")})  # billed, then the provider failed
        if choice.backend.name == "a":
            raise ProviderError("timeout after the bill")
        return choice.backend.name

    routed = await router.run(CALL, call, hold=False)
    assert routed.value == "c"
    assert routed.charged is None  # the call reserved for itself
    assert [d.chosen.name for d in routed.decisions if d.chosen] == ["a", "c"]
    assert routed.decision.reasons() == {
        "a": "failed with ProviderError; fell back",
        "b": "worst case 0.1 usd is over what its budget has left: 0.05 usd left (33% of "
             "the tightest cap, team:a/usd/run:r1)",
    }
    assert await spent(team) == D("0.20")


async def test_a_budget_refusal_inside_the_call_is_a_fallback() -> None:
    (team,) = budgets(("team:a", "1"))
    router = Router([Backend("a", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("local", BackendKind.LOCAL)], budget=team, order="listed")

    async def call(choice: RouteChoice) -> str:
        if choice.backend.name == "a":
            raise BudgetExceeded(unit="tokens", requested=12_000, cap=100_000, spent=95_000,
                                 held=0, note="day cap")
        return "local answer"

    routed = await router.run(CALL, call)
    assert routed.value == "local answer"
    assert routed.decision.reasons() == {
        "a": "its budget refused the call: cannot reserve 12,000 tokens: cap 100,000, spent "
             "95,000, held 0 in flight, available 5,000, short by 7,000. Raise the cap, "
             "reserve less (day cap)"}
    assert await spent(team) == 0  # the hold of the refused attempt was given back


async def test_free_candidate_runs_on_a_spent_budget_and_holds_nothing() -> None:
    (team,) = budgets(("team:a", "0"))
    router = Router([Backend("local", BackendKind.LOCAL),
                     Backend("cloud", BackendKind.CLOUD, prices=CHEAP)], budget=team)

    async def call(choice: RouteChoice) -> str:
        assert (await team.usage())[0].held == 0
        return choice.backend.name

    routed = await router.run(CALL, call)
    assert routed.value == "local"
    assert routed.charged is None


async def test_cancellation_releases_the_hold_and_does_not_fall_back() -> None:
    (team,) = budgets(("team:a", "1"))
    router = Router([Backend("a", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("b", BackendKind.CLOUD, prices=CHEAP)], budget=team)
    started = anyio.Event()
    called: list[str] = []

    async def call(choice: RouteChoice) -> str:
        called.append(choice.backend.name)
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as tg:
        tg.start_soon(router.run, CALL, call)
        await started.wait()
        assert (await team.usage())[0].held == D("0.10")
        tg.cancel_scope.cancel()
    assert called == ["a"]
    usage = (await team.usage())[0]
    assert (usage.held, usage.spent) == (0, 0)


async def test_an_error_outside_fallback_on_propagates_after_the_release() -> None:
    (team,) = budgets(("team:a", "1"))
    router = Router([Backend("a", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("b", BackendKind.CLOUD, prices=CHEAP)], budget=team,
                    fallback_on=(ProviderError,))

    async def call(choice: RouteChoice) -> str:
        raise KeyError("a bug, not a provider error")

    with pytest.raises(KeyError):
        await router.run(CALL, call)
    assert (await team.usage())[0].held == 0


async def test_sdk_needs_allow_sdk_per_call_or_per_router() -> None:
    router = Router([Backend("managed", BackendKind.SDK, rates=CostRates(per_job=D("2")))],
                    budget=budgets(("team:a", "5"))[0])
    job = Work(max_runtime_s=60)
    with pytest.raises(NoRoute, match="did not allow SDKs"):
        await router.decide(job)
    decision = await router.decide(job, allow_sdk=True)
    assert decision.chosen is not None
    assert decision.cost == D("2")


async def test_ladder_steps_down_on_a_real_budget(tmp_path: Path) -> None:
    """On a SQLite file: spend moves the remaining fraction across the ladder's steps."""
    store = store_from_url(f"sqlite:///{tmp_path / 'budgets.db'}")
    owner = Principals(store, run_id="r1")
    team = owner.get("team:a", caps=[LimitSpec("usd", Window.run(), D("1.00"))])
    router = Router([Backend("premium", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("cheap", BackendKind.CLOUD, prices=CHEAP),
                     Backend("local", BackendKind.LOCAL)],
                    budget=team, order="listed",
                    ladder=Ladder({D("0.20"): "cheap", D("0.05"): "local"}))
    picks: list[str] = []
    try:
        for _ in range(14):
            routed = await router.run(CALL, _answer)
            picks.append(routed.backend.name)
        remaining = await read_remaining(team, "usd")
    finally:
        await owner.aclose()
    # 8 x 0.10 premium -> 0.20 left (not under 20%); one more premium -> 0.10 left (10%):
    # cheap at 0.02 until under 5%, then local for free
    assert picks == ["premium"] * 9 + ["cheap"] * 3 + ["local"] * 2
    assert remaining.left == D("0.04")
    assert remaining.fraction == D("0.04")


async def _answer(choice: RouteChoice) -> str:
    await anyio.lowlevel.checkpoint()
    return choice.backend.name


async def test_remaining_is_the_tightest_limit_of_the_whole_chain() -> None:
    owner = Principals(MemoryStore(), run_id="r1")
    tenant = owner.get("tenant:acme", caps=[LimitSpec("usd", Window.run(), D("1")),
                                            LimitSpec("usd", Window.month(), D("100"))])
    agent = tenant.child("agent:x", caps=[LimitSpec("usd", Window.run(), D("5")),
                                          LimitSpec("tokens", Window.run(), 100)])
    async with agent.reserve({"usd": D("0.75")}) as held:
        await held.commit()
    remaining = await read_remaining(agent, "usd")
    assert remaining.left == D("0.25")
    assert remaining.key == "tenant:acme/usd/run:r1"
    assert remaining.fraction == D("0.25")
    none = await read_remaining(owner.get("user:u", caps=[]), "usd")
    assert none.left == 0
    assert none.key is None
    assert str(none) == "no usd cap is set (the default cap is 0)"


async def test_router_refuses_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="two candidates"):
        Router([Backend("a", BackendKind.LOCAL), Backend("a", BackendKind.LAN)])
    with pytest.raises(ConfigurationError, match="unknown candidates"):
        Router([Backend("a", BackendKind.LOCAL)], budget=budgets(("t:x", "1"))[0],
               ladder=Ladder({D("0.1"): "b"}))
    with pytest.raises(ConfigurationError, match="pass budget="):
        Router([Backend("a", BackendKind.LOCAL)], ladder=Ladder({D("0.1"): "a"}))
    with pytest.raises(ConfigurationError, match="at least one"):
        Router([])
    router = Router([Backend("a", BackendKind.LOCAL)])
    with pytest.raises(TypeError, match="must be a Work"):
        await router.decide("work")  # type: ignore[arg-type]


async def test_a_hold_refused_after_a_stale_read_falls_back_and_reads_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The read and the hold are two steps; what is read can be stale by the hold (another
    process spent, a period rolled over). The hold is the authority: a refused hold is a
    fallback, never an overspend. Forced here with a clock that moves between the two steps
    into a day whose budget is already spent."""
    day_one, day_two = 1_764_547_200.0, 1_764_633_600.0  # 2025-12-01 and 12-02, UTC
    now = [day_two]
    budget = Budget(usd=D("0.15"), window=Window.day(), clock=lambda: now[0])
    async with budget.reserve({"usd": D("0.15")}) as spent_tomorrow:
        await spent_tomorrow.commit()
    now[0] = day_one
    router = Router([Backend("a", BackendKind.CLOUD, prices=PREMIUM),
                     Backend("local", BackendKind.LOCAL)], budget=budget, order="listed")
    real_read = read_remaining

    async def read_then_roll_over(budget: Budget, unit: str) -> RemainingBudget:
        left = await real_read(budget, unit)
        now[0] = day_two  # between the read and the hold
        return left

    called: list[str] = []

    async def call(choice: RouteChoice) -> str:
        called.append(choice.backend.name)
        return choice.backend.name

    monkeypatch.setattr("outlay.routing._router.read_remaining", read_then_roll_over)
    routed = await router.run(CALL, call)
    assert called == ["local"]  # "a" was never called: its hold was refused
    assert routed.decisions[0].chosen is not None
    assert routed.decisions[0].chosen.name == "a"  # chosen on the stale read
    assert routed.decision.reasons() == {
        "a": "its budget refused the hold of 0.1 usd (spent meanwhile)"}
    assert (await budget.remaining())["usd"] == 0  # nothing overspent


def test_for_models_narrows_the_router_to_the_named_candidates() -> None:
    """The routed framework models are built on ``Router.for_models``: it checks the mapping
    and keeps only the candidates that have a model."""
    router = Router([Backend("a", BackendKind.LOCAL), Backend("b", BackendKind.LAN)])
    narrowed, models = router.for_models({"b": 2}, int, "a number")
    assert [b.name for b in narrowed.candidates] == ["b"]
    assert models == {"b": 2}
    with pytest.raises(TypeError, match="non-empty mapping"):
        router.for_models({}, int, "a number")
    with pytest.raises(ConfigurationError, match=r"unknown candidates \['c'\]"):
        router.for_models({"c": 1}, int, "a number")
    with pytest.raises(TypeError, match=r"models\['a'\] must be a number, got 'x'"):
        router.for_models({"a": "x"}, int, "a number")
