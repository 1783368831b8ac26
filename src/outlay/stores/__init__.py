"""Stores: where limits, holds and spend live.

``store_from_url`` picks one by URL scheme and imports its driver only then, so ``import outlay``
never imports a database driver:

- ``memory://`` -> ``MemoryStore``, the default, for one process.
- ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` -> ``SQLiteStore``, embedded and
  durable, shared by several processes on one host.
- ``redis://host:port/db`` (``rediss://``, ``unix://``) -> ``RedisStore``, for many processes
  and machines (needs the ``redis`` extra).

``SQLiteStore`` and ``RedisStore`` are importable from here, loaded (with their drivers) on
first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._core import ConfigurationError
from ._base import Admission, LimitUsage, Store
from ._memory import MemoryStore

if TYPE_CHECKING:
    from ._redis import RedisStore as RedisStore
    from ._sqlite import SQLiteStore as SQLiteStore

__all__ = (
    "Admission", "LimitUsage", "MemoryStore", "RedisStore", "SQLiteStore", "Store",
    "store_from_url",
)

#: URL scheme -> "module:Class"; the class builds itself with ``from_url(url)``.
_SCHEMES: dict[str, str] = {
    "memory": "outlay.stores._memory:MemoryStore",
    "redis": "outlay.stores._redis:RedisStore",
    "rediss": "outlay.stores._redis:RedisStore",
    "unix": "outlay.stores._redis:RedisStore",
    "sqlite": "outlay.stores._sqlite:SQLiteStore",
}

#: URL scheme -> the optional extra that installs its driver.
_EXTRAS: dict[str, str] = {"rediss": "redis", "unix": "redis"}

#: Public names whose module imports an optional driver: loaded on first attribute access.
_LAZY: dict[str, str] = {
    "RedisStore": "outlay.stores._redis",
    "SQLiteStore": "outlay.stores._sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def store_from_url(url: str) -> Store:
    """Build the store a URL names; raises ``ConfigurationError`` for an unknown scheme."""
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, got {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    target = _SCHEMES.get(scheme) if sep else None
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(_SCHEMES))
        raise ConfigurationError(f"unknown store URL {url!r}; expected one of: {known}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme, scheme)
        raise ConfigurationError(f"the {scheme}:// store needs an optional driver that is not "
                                 f"installed ({exc.name}); install outlay[{extra}]") from exc
    store_class = getattr(module, class_name)
    store: Store = store_class.from_url(url)
    return store
