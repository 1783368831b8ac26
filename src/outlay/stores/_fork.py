"""Stores that open connections themselves (SQLite, PostgreSQL) start afresh in a child made
by ``os.fork``.

What a child inherits is the parent's: an SQLite connection whose locks the child does not
hold (SQLite: never use a connection across ``fork``), a PostgreSQL socket the parent still
talks on, a ``threading.Lock`` a parent's thread may hold, queues of the parent's event loop,
the parent's checkpoint thread (not running in the child). Right after the fork (an
``os.register_at_fork`` hook) each live store forgets them and opens its own on first use; what
it forgot stays referenced here, never used and never closed by the child, so no finaliser
ends the parent's session or releases locks under it. ``multiprocessing``'s ``fork`` start
method, ``gunicorn --preload`` and the like then just work; ``spawn`` needs none of this.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class Forkable(Protocol):
    def _after_fork(self) -> list[object]:
        """In the child: drop what the parent owns, return it (kept, never closed)."""


_live: weakref.WeakSet[Forkable] = weakref.WeakSet()
_inherited: list[object] = []


def track(store: Forkable) -> None:
    """Have ``store`` start afresh in every child forked from now on."""
    _live.add(store)


def _in_child() -> None:
    _inherited.extend(kept for store in list(_live) for kept in store._after_fork())


os.register_at_fork(after_in_child=_in_child)
