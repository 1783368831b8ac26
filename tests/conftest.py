"""Shared fixtures: every core test runs on asyncio and trio (anyio's pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(autouse=True)
def _unconfigured_structlog() -> Iterator[None]:
    """``capture_logs()`` leaves structlog marked configured; later tests would then see
    outlay's events on stdout. Every test starts and ends with structlog unconfigured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
