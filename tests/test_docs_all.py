"""Every ``python`` block of README.md and of every docs/*.md page runs as written.

A page is one program: its blocks run in order in one namespace, so a later block may use what
an earlier one defined. Blocks may ``await`` at top level (as in ``python -m asyncio`` or a
notebook); a page with such blocks runs on asyncio. The LLM SDKs talk to the local fake
provider, files go to a temporary directory, ``REDIS_URL`` names the test Redis and
``OUTLAY_STORE`` a Redis store in a namespace of the test's own (a page's ``namespace=acme`` is
replaced by it too), deleted afterwards. The page-specific tests (tests/test_docs_*.py) check
what the recipes print.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import inspect
import os
import re
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from outlay.testing import FakeProvider

from .redisserver import RedisServer
from .storekit import REDIS_TEST_DB, drop_namespace_at

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


OWN_RUNNER = {"postgresql.md": "tests/test_docs_postgres.py"}
"""Pages that need a server this test does not provide; each is run by its own test."""


def python_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


@pytest.fixture
def namespace() -> str:
    return f"outlay-docs-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: RedisServer,
                namespace: str) -> Iterator[None]:
    url = f"{redis_server.url(REDIS_TEST_DB)}?namespace={namespace}"
    with FakeProvider() as provider:
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("OPENAI_BASE_URL", provider.openai_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", provider.anthropic_url)
        monkeypatch.setenv("REDIS_URL", redis_server.url(REDIS_TEST_DB))
        monkeypatch.setenv("OUTLAY_STORE", url)
        monkeypatch.chdir(tmp_path)
        try:
            yield
        finally:
            asyncio.run(drop_namespace_at(url))


def _litellm_callbacks() -> list[object]:
    litellm = sys.modules.get("litellm")
    return [] if litellm is None else list(litellm.callbacks)


def _drop_litellm_callbacks(before: list[object]) -> None:
    """A page that installs LiteLLM callbacks (docs/litellm.md sets ``litellm.callbacks``)
    must not leave them on for later tests: LiteLLM keeps them process-wide."""
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return
    for callback in list(litellm.callbacks):
        if not any(callback is kept for kept in before):
            litellm.logging_callback_manager.remove_callback_from_all_lists(callback)
    litellm.callbacks[:] = [c for c in litellm.callbacks if any(c is kept for kept in before)]


def test_every_page_has_its_blocks_found() -> None:
    assert len(python_blocks(ROOT / "README.md")) >= 5
    assert sum(len(python_blocks(page)) for page in PAGES) >= 30


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_page_runs_as_written(page: Path, environment: None, namespace: str) -> None:
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    if page.name in OWN_RUNNER:
        pytest.skip(f"{page.name} runs against PostgreSQL in {OWN_RUNNER[page.name]}")
    scope: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    callbacks_before = _litellm_callbacks()
    source = "\n".join(blocks).replace("namespace=acme", f"namespace={namespace}")
    # dont_inherit: the page runs as written, not under this module's __future__ imports
    # (postponed annotations would hide a page's typing names from get_type_hints)
    code = compile(source, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                   dont_inherit=True)
    try:
        if code.co_flags & inspect.CO_COROUTINE:
            asyncio.run(eval(code, scope))
        else:
            exec(code, scope)
    finally:
        # A page that leaves an SDK client open must not fail a later test with its
        # ResourceWarning: drop what the page made, now, while such warnings are ignored.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            scope.clear()
            gc.collect()
        _drop_litellm_callbacks(callbacks_before)
    assert os.getcwd() != str(ROOT)  # files the page wrote stayed in the temporary directory
