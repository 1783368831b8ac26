"""The pure routing decision: order, requirements, worst cases, budgets per candidate, ladder."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlay import (
    Accelerator,
    Backend,
    BackendKind,
    CostRates,
    InfeasibleWork,
    Ladder,
    PriceTable,
    RemainingBudget,
    TokenPrices,
    UnknownModelPrice,
    Work,
    accelerator_refusal,
    estimate_cost,
    select_backend,
    worst_case_cost,
)

D = Decimal
GPU_RATES = CostRates(per_vcpu_second=D("0.00001"), per_accelerator_second=D("0.0006"),
                      idle_tail_s=60, billing_increment_s=60)
SDK_RATES = CostRates(per_job=D("3.00"), per_accelerator_second=D(0))
TRAIN = Work(tool="train", accelerator_memory_gib=40, max_runtime_s=3590, vcpus=4,
             label="train")


def left(amount: str, fraction: str = "1", key: str = "tenant:t/usd/run:r") -> RemainingBudget:
    return RemainingBudget("usd", D(amount), D(fraction), key)


def laptop(free: bool = True, memory: int = 48) -> Backend:
    return Backend("laptop", BackendKind.LOCAL, node="laptop-1", tools={"train"},
                   accelerators=(Accelerator("rtx", memory, free=free),))


def rack() -> Backend:
    return Backend("rack", BackendKind.LAN, node="rack-7", tools={"train"},
                   accelerators=(Accelerator("a100", 40, free=False),))


def cloud() -> Backend:
    return Backend("cloud", BackendKind.CLOUD, tools={"train"}, rates=GPU_RATES,
                   accelerators=(Accelerator("h100", 80),))


def sdk() -> Backend:
    return Backend("sdk", BackendKind.SDK, tools={"train"}, rates=SDK_RATES,
                   accelerators=(Accelerator("managed", 80),))


ALL = [sdk(), cloud(), rack(), laptop()]  # listed out of order on purpose
ROOM = {"cloud": left("100"), "sdk": left("100")}


def test_kind_order_is_local_lan_cloud_sdk_whatever_the_listed_order() -> None:
    decision = select_backend(ALL, TRAIN, allow_sdk=True, budgets=ROOM)
    assert [v.backend.name for v in decision.verdicts] == ["laptop", "rack", "cloud", "sdk"]
    assert decision.chosen is not None
    assert decision.chosen.name == "laptop"
    assert decision.cost == 0
    assert [b.name for b in decision.fallbacks] == ["cloud", "sdk"]
    assert decision.reasons() == {
        "rack": "needs 1 accelerator(s) of >= 40 GiB; has no free accelerator"}


def test_listed_order_keeps_the_callers_preference() -> None:
    decision = select_backend(ALL, TRAIN, allow_sdk=True, budgets=ROOM, order="listed")
    assert decision.chosen is not None
    assert decision.chosen.name == "sdk"


def test_a_busy_or_small_accelerator_sends_the_job_to_the_cloud() -> None:
    busy = select_backend([laptop(free=False), cloud()], TRAIN, budgets=ROOM)
    assert busy.chosen is not None
    assert busy.chosen.name == "cloud"
    assert busy.reasons()["laptop"] == "needs 1 accelerator(s) of >= 40 GiB; has no free " \
                                       "accelerator"
    small = select_backend([laptop(memory=24), cloud()], TRAIN, budgets=ROOM)
    assert small.reasons()["laptop"] == ("needs 1 accelerator(s) of >= 40 GiB; 0 of 1 free "
                                         "accelerator(s) fit")
    # the cloud's worst case is estimate_cost over the declared maximums
    assert small.cost == estimate_cost(GPU_RATES, max_runtime_s=3590, vcpus=4, memory_gib=0,
                                       accelerators=1)


def test_sdk_is_never_chosen_unless_allowed() -> None:
    only_sdk = select_backend([laptop(free=False), sdk()], TRAIN, budgets=ROOM)
    assert only_sdk.chosen is None
    assert only_sdk.reasons()["sdk"] == ("a paid SDK backend, and the caller did not allow "
                                         "SDKs (allow_sdk=False)")
    allowed = select_backend([laptop(free=False), sdk()], TRAIN, budgets=ROOM, allow_sdk=True)
    assert allowed.chosen is not None
    assert allowed.chosen.name == "sdk"


def test_no_accelerator_is_one_rule_for_router_and_cost_gate() -> None:
    cpu = Backend("cpu-cloud", BackendKind.CLOUD, tools={"train"},
                  rates=CostRates(per_vcpu_second=D("0.00001")))
    decision = select_backend([cpu], TRAIN, budgets={"cpu-cloud": left("100")})
    rule = accelerator_refusal(1, D(40), ())
    assert decision.reasons() == {"cpu-cloud": rule}
    # a backend that claims a device but whose rates price none is refused by the cost gate
    mislabelled = Backend("odd", BackendKind.CLOUD, tools={"train"},
                          accelerators=(Accelerator("gpu", 80),),
                          rates=CostRates(per_vcpu_second=D("0.00001")))
    with pytest.raises(InfeasibleWork) as gate:
        worst_case_cost(mislabelled, TRAIN)
    assert str(gate.value).startswith(accelerator_refusal(1, D(0), ()) or "")
    odd = select_backend([mislabelled], TRAIN, budgets={"odd": left("100")})
    assert odd.reasons() == {"odd": str(gate.value)}


def test_tools_and_capabilities_are_requirements() -> None:
    vision = Backend("vision", BackendKind.LOCAL, capabilities={"vision"})
    plain = Backend("plain", BackendKind.LOCAL, tools={"ocr"})
    need = Work(tool="ocr", capabilities={"vision"})
    decision = select_backend([vision, plain], need)
    assert decision.chosen is None
    assert decision.reasons() == {"vision": "does not serve tool 'ocr'",
                                  "plain": "lacks capabilities ['vision']"}


def test_each_candidate_is_checked_against_the_budget_charged_for_it() -> None:
    """The LiteLLM lesson (its issue #41344): the budget of the candidate that would bill,
    not the budget of the one that was asked for, decides."""
    premium = Backend("premium", BackendKind.SDK, prices=TokenPrices(D("5"), D("25")))
    backup = Backend("backup", BackendKind.SDK, prices=TokenPrices(D("1"), D("5")))
    call = Work(input_tokens=10_000, max_output_tokens=2_000)
    assert worst_case_cost(premium, call) == D("0.10")
    assert worst_case_cost(backup, call) == D("0.02")
    decision = select_backend([premium, backup], call, allow_sdk=True, order="listed",
                              budgets={"premium": left("5"), "backup": left("0.01")},
                              failed={"premium": "failed with APIError; fell back"})
    assert decision.chosen is None  # the backup's own key is exhausted: it must not bill
    assert decision.reasons()["backup"] == (
        "worst case 0.02 usd is over what its budget has left: 0.01 usd left (100% of the "
        "tightest cap, tenant:t/usd/run:r)")


def test_a_free_candidate_is_never_blocked_by_a_spent_budget() -> None:
    spent = {"local-llm": left("0", "0"), "cloud-llm": left("0", "0")}
    local = Backend("local-llm", BackendKind.LOCAL)
    paid = Backend("cloud-llm", BackendKind.CLOUD, prices=TokenPrices(D("1"), D("1")))
    call = Work(input_tokens=100, max_output_tokens=100)
    decision = select_backend([paid, local], call, budgets=spent, order="listed")
    assert decision.chosen is local
    assert decision.reasons()["cloud-llm"].startswith("worst case 0.0002 usd is over")
    zero_rated = Backend("zero", BackendKind.CLOUD, rates=CostRates())
    assert select_backend([zero_rated], Work(max_runtime_s=60)).chosen is zero_rated


def test_paid_work_with_no_budget_is_refused() -> None:
    paid = Backend("cloud-llm", BackendKind.CLOUD, prices=TokenPrices(D("1"), D("1")))
    decision = select_backend([paid], Work(input_tokens=1, max_output_tokens=1))
    assert decision.reasons() == {"cloud-llm": "worst case 0.000002 usd and no budget is "
                                               "charged for it (paid work needs a budget)"}


def test_a_declared_price_needs_the_quantities_it_prices() -> None:
    cloud_gpu = cloud()
    with pytest.raises(InfeasibleWork, match="no max_runtime_s"):
        worst_case_cost(cloud_gpu, Work(tool="train", accelerators=1))
    model = Backend("m", BackendKind.CLOUD, prices=TokenPrices(D("1"), D("1")))
    with pytest.raises(InfeasibleWork, match="no input_tokens or max_output_tokens"):
        worst_case_cost(model, Work())
    table = Backend("unknown", BackendKind.CLOUD, prices=PriceTable({}), model="gpt-x")
    with pytest.raises(UnknownModelPrice, match="gpt-x"):
        worst_case_cost(table, Work(max_output_tokens=1))
    refused = select_backend([table], Work(max_output_tokens=1), budgets={"unknown": left("9")})
    assert "no price is known for model 'gpt-x'" in refused.reasons()["unknown"]


def test_rates_and_token_prices_add_up() -> None:
    hosted = Backend("hosted", BackendKind.CLOUD, rates=CostRates(per_job=D("0.5")),
                     prices=TokenPrices(D("1"), D("2")))
    work = Work(max_runtime_s=10, input_tokens=1_000_000, max_output_tokens=500_000)
    assert worst_case_cost(hosted, work) == D("0.5") + D("1") + D("1")


def test_ladder_steps_down_as_the_budget_runs_out() -> None:
    prices = {"premium": TokenPrices(D("5"), D("25")), "cheap": TokenPrices(D("1"), D("5"))}
    models = [Backend(name, BackendKind.CLOUD, prices=p) for name, p in prices.items()]
    models.append(Backend("local", BackendKind.LOCAL))
    ladder = Ladder({D("0.20"): "cheap", D("0.05"): "local"})
    call = Work(input_tokens=1000, max_output_tokens=1000)

    def pick(fraction: str) -> tuple[str | None, dict[str, str]]:
        room = left("10", fraction)
        decision = select_backend(models, call, order="listed", ladder=ladder, remaining=room,
                                  budgets={"premium": room, "cheap": room})
        chosen = decision.chosen
        return (None if chosen is None else chosen.name), dict(decision.reasons())

    assert pick("0.50") == ("premium", {})
    assert pick("0.20") == ("premium", {})  # "under 20%" is strict
    name, reasons = pick("0.1999")
    assert name == "cheap"
    assert reasons == {"premium": "ladder: 19.99% of the budget left, below 20%: start at "
                                  "'cheap'"}
    name, reasons = pick("0.04")
    assert name == "local"
    assert set(reasons) == {"premium", "cheap"}
    assert reasons["cheap"] == "ladder: 4% of the budget left, below 5%: start at 'local'"


def test_bad_declarations_are_refused_when_built() -> None:
    with pytest.raises(ValueError, match="declares no price"):
        Backend("paid", BackendKind.SDK)
    with pytest.raises(ValueError, match="one of local, lan, cloud, sdk"):
        Backend("x", "moon")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one str"):
        Backend("x", BackendKind.LOCAL, tools="train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="accelerators must be >= 0"):
        Work(accelerators=-1)
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        Ladder({D("1.5"): "x"})
    with pytest.raises(TypeError):
        Ladder({0.2: "x"})  # type: ignore[dict-item]
    assert Backend("x", "lan").kind is BackendKind.LAN  # type: ignore[arg-type]
    assert Work(accelerator_memory_gib=16).accelerators == 1


def test_decision_prints_as_a_table_of_every_candidate() -> None:
    decision = select_backend(ALL, TRAIN, budgets=ROOM)
    text = str(decision)
    lines = text.splitlines()
    assert lines[0] == "train -> laptop (local)"
    assert lines[1].split() == ["candidate", "kind", "node", "worst", "case", "verdict"]
    assert lines[2].split()[:5] == ["laptop", "local", "laptop-1", "0", "chosen"]
    assert "refused: needs 1 accelerator(s) of >= 40 GiB; has no free accelerator" in lines[3]
    assert lines[4].split()[-1] == "eligible"
    assert lines[5].endswith("refused: a paid SDK backend, and the caller did not allow SDKs "
                             "(allow_sdk=False)")
    fields = decision.fields()
    assert fields["chosen"] == "laptop"
    assert fields["kind"] == "local"
    assert fields["node"] == "laptop-1"
    assert fields["estimate"] == "0"
    assert set(fields["refused"]) == {"rack", "sdk"}


@given(fractions=st.lists(st.decimals(min_value=0, max_value=1, places=4), min_size=1,
                          max_size=5),
       budget=st.decimals(min_value=0, max_value=1, places=4))
def test_chosen_always_fits_the_budget_charged_for_it(
    fractions: list[Decimal], budget: Decimal
) -> None:
    """Whatever the prices and what remains, the chosen candidate's worst case fits its own
    budget (or is free), and every candidate before it was refused."""
    models = [Backend(f"m{i}", BackendKind.CLOUD, rates=CostRates(per_job=price))
              for i, price in enumerate(fractions)]
    rooms = {f"m{i}": left(str(budget * (i % 2))) for i in range(len(models))}
    decision = select_backend(models, Work(max_runtime_s=1), budgets=rooms)
    for verdict in decision.verdicts:
        if verdict.status == "chosen":
            assert verdict.cost is not None
            assert verdict.cost == 0 or verdict.cost <= rooms[verdict.backend.name].left
            break
        assert verdict.status == "refused"
