"""Money policy: caps per window, admission decisions and compute cost estimates (pure)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlay import (
    AdmissionDecision,
    BudgetCap,
    CostRates,
    InfeasibleWork,
    WindowState,
    accelerator_refusal,
    admits,
    estimate_cost,
)

D = Decimal


def test_cap_defaults_to_zero_and_refuses_bad_money() -> None:
    cap = BudgetCap(month=D("500"))
    assert cap["month"] == D("500")
    assert cap["day"] == D(0)  # unset window: paid work is off
    assert "day" not in cap
    assert list(cap) == ["month"]
    with pytest.raises(TypeError, match="Decimal"):
        BudgetCap(month=5.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        BudgetCap(month=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        BudgetCap(month=D("-1"))
    with pytest.raises(ValueError, match="finite"):
        BudgetCap(month=D("NaN"))
    assert BudgetCap({"6h": D(5)}, run=D(1)) == {"6h": D(5), "run": D(1)}


def test_admitted_only_if_it_fits_every_window() -> None:
    cap = BudgetCap(run=D("50"), month=D("500"))
    states = {"run": WindowState(spent=D("10"), reserved=D("5")),
              "month": WindowState(spent=D("480"), reserved=D("15"))}
    ok = admits(D("5"), states, cap)
    assert ok.admitted
    assert ok
    assert ok.refused_window is None
    assert "month 500/500" in ok.reason
    refused = admits(D("5.01"), states, cap)
    assert refused == AdmissionDecision(False, "month", refused.reason)
    assert not refused
    for figure in ("'month'", "cap 500", "committed 480", "reserved 15", "estimate 5.01",
                   "over the cap by 0.01"):
        assert figure in refused.reason


def test_window_with_state_but_no_cap_is_capped_at_zero() -> None:
    decision = admits(D("1"), {"day": WindowState()}, BudgetCap(month=D("10")))
    assert decision.refused_window == "day"
    assert "default cap is 0" in decision.reason


def test_no_budget_at_all_refuses_paid_work() -> None:
    decision = admits(D("0.01"), {}, BudgetCap())
    assert not decision.admitted
    assert "no budget is set" in decision.reason
    assert admits(D(0), {}, BudgetCap()).admitted


def test_admits_refuses_float_and_negative_estimates() -> None:
    with pytest.raises(TypeError):
        admits(0.5, {}, BudgetCap(run=D(1)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        admits(D("-1"), {}, BudgetCap(run=D(1)))
    with pytest.raises(TypeError):
        WindowState(spent=1.0)  # type: ignore[arg-type]


money = st.decimals(min_value=0, max_value=10_000, places=2)


@given(cap=money, spent=money, reserved=money, estimate=money)
def test_admission_is_exactly_the_sum_rule(
    cap: Decimal, spent: Decimal, reserved: Decimal, estimate: Decimal
) -> None:
    decision = admits(estimate, {"w": WindowState(spent, reserved)}, BudgetCap(w=cap))
    assert decision.admitted == (spent + reserved + estimate <= cap)


def test_estimate_cost_bills_runtime_plus_idle_tail_rounded_up() -> None:
    rates = CostRates(per_vcpu_second=D("0.0000125"), per_gib_second=D("0.0000015"),
                      per_job=D("0.01"), idle_tail_s=30, billing_increment_s=60)
    # 100 s + 30 s idle = 130 s -> 180 s billed; 2 vCPU + 4 GiB
    cost = estimate_cost(rates, max_runtime_s=100, vcpus=2, memory_gib=4)
    assert cost == 180 * (2 * D("0.0000125") + 4 * D("0.0000015")) + D("0.01")
    assert isinstance(cost, Decimal)


def test_estimate_cost_minimum_and_fractional_quantities_are_exact() -> None:
    rates = CostRates(per_vcpu_second=D("0.01"), minimum_billed_s=60)
    assert estimate_cost(rates, max_runtime_s=1, vcpus=0.5, memory_gib=0) == D("0.30")
    assert estimate_cost(rates, max_runtime_s=D("90.2"), vcpus=1, memory_gib=0) == D("0.91")


def test_estimate_cost_refuses_bad_input() -> None:
    with pytest.raises(TypeError):
        CostRates(per_vcpu_second=0.01)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1 second"):
        CostRates(billing_increment_s=0)
    with pytest.raises(ValueError, match=">= 0"):
        CostRates(idle_tail_s=-1)
    with pytest.raises(ValueError, match=">= 0"):
        estimate_cost(CostRates(), max_runtime_s=-1, vcpus=1, memory_gib=1)
    with pytest.raises(ValueError, match="finite"):
        estimate_cost(CostRates(), max_runtime_s=float("inf"), vcpus=1, memory_gib=1)
    with pytest.raises(TypeError):
        estimate_cost(CostRates(), max_runtime_s="10", vcpus=1, memory_gib=1)  # type: ignore[arg-type]


def test_estimate_cost_prices_accelerators_per_device_second() -> None:
    rates = CostRates(per_vcpu_second=D("0.00001"), per_accelerator_second=D("0.0006"),
                      idle_tail_s=60, billing_increment_s=60)
    # 3590 s + 60 s idle = 3650 s -> 3660 s billed; 4 vCPU and 2 GPUs
    cost = estimate_cost(rates, max_runtime_s=3590, vcpus=4, memory_gib=0, accelerators=2)
    assert cost == 3660 * (4 * D("0.00001") + 2 * D("0.0006"))
    assert cost == D("4.5384")


def test_no_accelerator_makes_an_accelerator_job_infeasible_not_free() -> None:
    cpu_only = CostRates(per_vcpu_second=D("0.00001"))  # no per_accelerator_second
    with pytest.raises(InfeasibleWork, match=r"needs 1 accelerator.*has no free accelerator"):
        estimate_cost(cpu_only, max_runtime_s=10, vcpus=1, memory_gib=0, accelerators=1)
    assert estimate_cost(cpu_only, max_runtime_s=10, vcpus=1, memory_gib=0) == D("0.0001")
    # the same rule the router applies to a backend's free accelerators
    assert accelerator_refusal(1, D(0), ()) == "needs 1 accelerator(s); has no free accelerator"
    assert accelerator_refusal(2, D(24), [D(80), D(16)]) == (
        "needs 2 accelerator(s) of >= 24 GiB; 1 of 2 free accelerator(s) fit")
    assert accelerator_refusal(1, D(24), [D(80), D(16)]) is None
    assert accelerator_refusal(0, D(24), ()) is None
    with pytest.raises(TypeError):
        estimate_cost(cpu_only, max_runtime_s=1, vcpus=1, memory_gib=0,
                      accelerators=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CostRates(per_accelerator_second=0.5)  # type: ignore[arg-type]


def test_estimate_cost_is_exact_where_the_default_context_would_round() -> None:
    rates = CostRates(per_vcpu_second=D("0.0000000000000000123456789"),
                      per_accelerator_second=D("0.000123456789012345678901"))
    cost = estimate_cost(rates, max_runtime_s=D("123456789.123456789"), vcpus=3,
                         memory_gib=0, accelerators=7)
    exact = (Fraction(123456790) * (3 * Fraction("0.0000000000000000123456789")
                                    + 7 * Fraction("0.000123456789012345678901")))
    assert Fraction(cost) == exact  # 28 significant digits would have rounded this


rate = st.decimals(min_value=0, max_value=1, places=9)
quantity = st.decimals(min_value=0, max_value=100_000, places=3)


@given(per_vcpu=rate, per_gib=rate, per_acc=rate, per_job=rate,
       tail=st.integers(0, 600), minimum=st.integers(0, 3600), step=st.integers(1, 3600),
       runtime=quantity, cpus=quantity, gib=quantity, devices=st.integers(0, 16),
       shrink=st.tuples(*[st.fractions(0, 1)] * 4))
def test_estimate_cost_is_an_exact_upper_bound(
    per_vcpu: Decimal, per_gib: Decimal, per_acc: Decimal, per_job: Decimal, tail: int,
    minimum: int, step: int, runtime: Decimal, cpus: Decimal, gib: Decimal, devices: int,
    shrink: tuple[Fraction, Fraction, Fraction, Fraction],
) -> None:
    """Any job within its declared maximums is billed at most the estimate, and the estimate
    is exactly what the billing rule says (checked in rationals)."""
    rates = CostRates(per_vcpu_second=per_vcpu, per_gib_second=per_gib, per_job=per_job,
                      idle_tail_s=tail, minimum_billed_s=minimum, billing_increment_s=step,
                      per_accelerator_second=per_acc)

    def billed(run: Fraction, c: Fraction, g: Fraction, a: int) -> Fraction:
        seconds = max(run + tail, Fraction(minimum))
        steps = -((-seconds) // step)  # ceiling
        return (steps * step * (c * Fraction(per_vcpu) + g * Fraction(per_gib)
                                + a * Fraction(per_acc)) + Fraction(per_job))

    worst = estimate_cost(rates, max_runtime_s=runtime, vcpus=cpus, memory_gib=gib,
                          accelerators=devices)
    assert Fraction(worst) == billed(Fraction(runtime), Fraction(cpus), Fraction(gib), devices)
    actual = billed(Fraction(runtime) * shrink[0], Fraction(cpus) * shrink[1],
                    Fraction(gib) * shrink[2], int(devices * shrink[3]))
    assert actual <= Fraction(worst)
