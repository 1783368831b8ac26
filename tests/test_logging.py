"""structlog events: emitted when the application configured structlog, never configured by us."""

from __future__ import annotations

import subprocess
import sys

import pytest
import structlog
from structlog.testing import capture_logs

from outlay import AtomicBudget, AtomicTokenBudget

pytestmark = pytest.mark.anyio


async def test_budget_events() -> None:
    budget = AtomicBudget(3, name="calls")
    with capture_logs() as logs:
        assert await budget.try_reserve(2)
        assert not await budget.try_reserve(2)
        await budget.release(2)
    assert [e["event"] for e in logs] == [
        "outlay.budget.reserved", "outlay.budget.denied", "outlay.budget.released",
    ]
    assert logs[1] == {"event": "outlay.budget.denied", "log_level": "info", "budget": "calls",
                       "cost": 2, "available": 1}


async def test_token_reconcile_event() -> None:
    budget = AtomicTokenBudget(1000, name="gpt")
    with capture_logs() as logs:
        reservation = await budget.try_reserve_tokens(300)
        assert reservation is not None
        await budget.record_usage(reservation, 200, 150)
    reconciled = [e for e in logs if e["event"] == "outlay.tokens.reconciled"]
    assert len(reconciled) == 1
    assert reconciled[0]["estimate"] == 300
    assert reconciled[0]["actual"] == 350
    assert reconciled[0]["overage"] == 50
    assert reconciled[0]["refunded"] == 0


def test_hot_path_flag_tracks_structlog_configuration() -> None:
    from outlay._core import _log

    states = [(_log.config.is_configured, structlog.is_configured())]
    structlog.configure()
    states.append((_log.config.is_configured, structlog.is_configured()))
    structlog.reset_defaults()
    states.append((_log.config.is_configured, structlog.is_configured()))
    assert states == [(False, False), (True, True), (False, False)]


def test_unconfigured_structlog_prints_nothing() -> None:
    code = (
        "import anyio, outlay\n"
        "async def main():\n"
        "    b = outlay.AtomicBudget(1)\n"
        "    await b.try_reserve(1); await b.try_reserve(1); await b.release(1)\n"
        "anyio.run(main)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == ""
    assert out.stderr == ""


async def test_a_guard_denial_reaches_stdlib_logging_without_structlog(
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 17 item 13: with structlog unconfigured, an ``AtomicBudget`` denial reaches the
    stdlib logger ``outlay`` (grants, on the hot path, are logged to structlog only)."""
    import logging

    budget = AtomicBudget(1, name="calls")
    with caplog.at_level(logging.INFO, logger="outlay"):
        assert await budget.try_reserve(1)
        assert not await budget.try_reserve(1)
        assert not budget.try_reserve_nowait(1)
    denials = [r for r in caplog.records if r.name == "outlay"
               and getattr(r, "event", None) == "outlay.budget.denied"]
    assert [getattr(r, "fields", {})["budget"] for r in denials] == ["calls", "calls"]
    assert not [r for r in caplog.records if getattr(r, "event", None) == "outlay.budget.reserved"]
