"""The LiteLLM proxy with outlay as its budget authority: docs/litellm.md's module and config,
run as written in a real ``litellm`` proxy process on loopback, against the local fake provider.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("litellm")
pytest.importorskip("litellm.proxy.proxy_server", reason="the LiteLLM proxy is not installed "
                    "(pip install 'litellm[proxy]')")

from outlay import Principals
from outlay.testing import FakeProvider, Script

pytestmark = pytest.mark.anyio
DOC = Path(__file__).resolve().parent.parent / "docs" / "litellm.md"
MASTER_KEY = "sk-outlay-test-0123456789abcdef0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def block(language: str, index: int = 0) -> str:
    blocks: list[str] = re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(),
                                   flags=re.S | re.M)
    return blocks[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proxy:
    url: str
    fake: FakeProvider
    store: str


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The documented module and config (the config pointed at the fake provider), served by a
    real proxy on a free loopback port; stopped afterwards."""
    litellm_bin = Path(sys.executable).with_name("litellm")
    if not litellm_bin.exists():
        pytest.skip("the litellm proxy command is not installed")
    here = tmp_path_factory.mktemp("litellm-proxy")
    (here / "outlay_budgets.py").write_text(block("python", 1))
    config = block("yaml").replace("      api_key: os.environ/OPENAI_API_KEY",
                                   "      api_key: os.environ/OPENAI_API_KEY\n"
                                   "      api_base: os.environ/FAKE_OPENAI_BASE")
    (here / "config.yaml").write_text(config)
    store = f"sqlite:///{here / 'budgets.db'}"
    with FakeProvider(Script(input_tokens=100, output_tokens=50)) as fake:
        port = free_port()
        env = {**os.environ, "OUTLAY_URL": store, "OPENAI_API_KEY": "test",
               "FAKE_OPENAI_BASE": fake.openai_url, "LITELLM_MASTER_KEY": MASTER_KEY,
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(here)}
        log = (here / "proxy.log").open("w")
        process = subprocess.Popen(
            [str(litellm_bin), "--config", str(here / "config.yaml"), "--host", "127.0.0.1",
             "--port", str(port)], cwd=here, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the proxy exited: {(here / 'proxy.log').read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/health/liveliness", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("the proxy did not start within 90 s")
                time.sleep(0.25)
            yield Proxy(url, fake, store)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
            shutil.rmtree(here / "__pycache__", ignore_errors=True)


async def ask(client: httpx.AsyncClient, proxy: Proxy, user: str) -> httpx.Response:
    return await client.post(f"{proxy.url}/v1/chat/completions", headers={
        "Authorization": f"Bearer {MASTER_KEY}"}, json={
        "model": "gpt-4o-mini", "user": user,
        "messages": [{"role": "user", "content": "hello"}]}, timeout=30)


async def figures(proxy: Proxy, user: str, unit: str) -> list[tuple[Any, Any]]:
    """``(spent, held)`` of every limit of ``unit`` on end user ``user``, read from the store."""
    principals = Principals(proxy.store)
    try:
        limits = await principals.store.limits("")
    finally:
        await principals.aclose()
    return [(u.spent, u.held) for u in limits if f"/user:{user}/{unit}/" in u.key]


async def test_an_end_user_is_admitted_exactly_to_the_cap_under_concurrent_first_requests(
        proxy: Proxy) -> None:
    """Six concurrent first requests of a new end user capped at 2 requests a day: the
    provider sees exactly 2, the other 4 are refused before it is called."""
    before = len(proxy.fake.requests)
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(*[ask(client, proxy, "zed") for _ in range(6)])
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2, [r.text for r in responses]
    refused = [r for r in responses if r.status_code != 200]
    assert all("cannot reserve" in r.text and "requests" in r.text for r in refused)
    assert len(proxy.fake.requests) - before == 2
    assert await figures(proxy, "zed", "requests") == [(2, 0)]


async def test_spend_is_recorded_per_end_user_at_the_reported_usage(proxy: Proxy) -> None:
    async with httpx.AsyncClient() as client:
        response = await ask(client, proxy, "ann")
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["total_tokens"] == 150
    assert await figures(proxy, "ann", "requests") == [(1, 0)]
    # 100 in x $0.15 + 50 out x $0.60 per million
    assert await figures(proxy, "ann", "usd") == [(Decimal("0.000045"), 0)]
