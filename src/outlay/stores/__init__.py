"""Stores: where limits, holds and spend live.

``store_from_url`` picks one by URL scheme and imports its driver only then, so ``import outlay``
never imports a database driver:

- ``memory://`` -> ``MemoryStore``, the default, for one process.
- ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` -> ``SQLiteStore``, embedded and
  durable, shared by several processes on one host.
- ``redis://host:port/db`` (``rediss://``, ``unix://``) -> ``RedisStore``, for many processes
  and machines (needs the ``redis`` extra); ``redis+cluster://host:port`` for a cluster,
  ``redis+sentinel://host:port,host:port/service`` for a master behind Sentinel (``rediss+``
  for TLS); ``valkey`` / ``valkeys`` in place of ``redis`` / ``rediss`` open the same client.
- ``postgresql://user@host:port/db?schema=outlay`` (``postgres://``) -> ``PostgresStore``, for
  teams that run PostgreSQL (needs the ``postgresql`` extra).

Any URL may end in ``?fail_open=true`` (or ``&fail_open=true``): the store comes wrapped in
``FailOpenStore``, which admits (loudly) instead of failing when the store cannot answer.

``SQLiteStore``, ``RedisStore`` and ``PostgresStore`` are importable from here, loaded (with
their drivers) on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._core import ConfigurationError
from ._base import Admission, HoldUsage, LimitUsage, Store
from ._events import SpendEvent
from ._failopen import FailOpenStore
from ._memory import MemoryStore
from ._url import redact_url

if TYPE_CHECKING:
    from ._postgres import PostgresStore as PostgresStore
    from ._redis import RedisStore as RedisStore
    from ._sqlite import SQLiteStore as SQLiteStore

__all__ = (
    "Admission", "FailOpenStore", "HoldUsage", "LimitUsage", "MemoryStore", "PostgresStore",
    "RedisStore", "SQLiteStore", "SpendEvent", "Store", "store_from_url",
)

#: The schemes ``RedisStore.from_url`` reads: one server, a cluster or a master behind
#: Sentinel, on Redis or Valkey, plain or TLS; and a Unix socket.
_REDIS_SCHEMES = ("unix", *(f"{server}{tls}{topology}" for server in ("redis", "valkey")
                            for tls in ("", "s") for topology in ("", "+cluster", "+sentinel")))

#: URL scheme -> "module:Class"; the class builds itself with ``from_url(url)``.
_SCHEMES: dict[str, str] = {
    "memory": "outlay.stores._memory:MemoryStore",
    "postgres": "outlay.stores._postgres:PostgresStore",
    "postgresql": "outlay.stores._postgres:PostgresStore",
    **dict.fromkeys(_REDIS_SCHEMES, "outlay.stores._redis:RedisStore"),
    "sqlite": "outlay.stores._sqlite:SQLiteStore",
}

#: URL scheme -> the optional extra that installs its driver.
_EXTRAS: dict[str, str] = {**dict.fromkeys(_REDIS_SCHEMES, "redis"), "postgres": "postgresql"}

#: Public names whose module imports an optional driver: loaded on first attribute access.
_LAZY: dict[str, str] = {
    "PostgresStore": "outlay.stores._postgres",
    "RedisStore": "outlay.stores._redis",
    "SQLiteStore": "outlay.stores._sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def store_from_url(url: str) -> Store:
    """Build the store a URL names; raises ``ConfigurationError`` for an unknown scheme.

    ``fail_open=true`` in the query wraps the store in ``FailOpenStore`` (``false`` is the
    default: fail closed)."""
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, got {type(url).__name__}")
    url, fail_open = _fail_open_option(url)
    store = _open(url)
    return FailOpenStore(store) if fail_open else store


def _fail_open_option(url: str) -> tuple[str, bool]:
    """``url`` without its ``fail_open`` query option, and the option's value."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, False
    query, hash_sep, fragment = query.partition("#")
    kept, flags = [], []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "fail_open":
            flags.append(value.lower())
        else:
            kept.append(pair)
    if not flags:
        return url, False
    if len(flags) > 1 or flags[0] not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigurationError(f"bad fail_open in {redact_url(url)!r}; expected true or false")
    rest = "&".join(p for p in kept if p)
    return base + ("?" + rest if rest else "") + hash_sep + fragment, flags[0] in (
        "true", "1", "yes")


def _open(url: str) -> Store:
    scheme, sep, _ = url.partition("://")
    target = _SCHEMES.get(scheme) if sep else None
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(_SCHEMES))
        raise ConfigurationError(f"unknown store URL {redact_url(url)!r}; expected one of: "
                                 f"{known}")
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
