"""The optional store methods (``limits``, ``reset_spend``, ``held_reservations``) default to a
clear ``NotImplementedError``; their behaviour on every store is in ``test_store_behaviour.py``."""

from __future__ import annotations

import pytest

from outlay import MemoryStore, Store

pytestmark = pytest.mark.anyio


async def test_optional_methods_default_to_a_clear_not_implemented() -> None:
    class Minimal(MemoryStore):
        limits = Store.limits
        reset_spend = Store.reset_spend
        held_reservations = Store.held_reservations

    store = Minimal()
    with pytest.raises(NotImplementedError, match="Minimal cannot list its limits"):
        await store.limits()
    with pytest.raises(NotImplementedError, match="Minimal cannot reset spend"):
        await store.reset_spend("k")
    with pytest.raises(NotImplementedError, match="Minimal cannot count its holds"):
        await store.held_reservations()
