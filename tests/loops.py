"""The event loops the tests run on: asyncio and trio everywhere (``conftest.anyio_backend``),
and uvloop as well for the modules that take ``every_loop``: the store contract, its faults and
the Redis store's group commit, where the event loop's own scheduling and transports matter."""

from __future__ import annotations

from importlib.util import find_spec

import pytest

ASYNCIO = pytest.param("asyncio", id="asyncio")
TRIO = pytest.param("trio", id="trio")
UVLOOP = pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop",
                      marks=pytest.mark.skipif(find_spec("uvloop") is None,
                                               reason="uvloop is not installed (no build for "
                                                      "this platform)"))


@pytest.fixture(name="anyio_backend", params=[ASYNCIO, TRIO, UVLOOP])
def every_loop(request: pytest.FixtureRequest) -> object:
    """``anyio_backend`` on asyncio, trio and uvloop (import it into a test module)."""
    return request.param
