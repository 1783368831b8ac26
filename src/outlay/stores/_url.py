"""Store URLs as they may be shown: in error messages, logs and the CLI's output."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Query options whose value is a credential (compared case-insensitively).
_SECRET_OPTIONS = ("password", "passwd", "pass", "secret", "token", "auth", "key")


def redact_url(url: str, *, hide: Collection[str] = ()) -> str:
    """``url`` without credentials: the password of its user info and the value of any query
    option that carries one (``?password=...``), or that ``hide`` names, become ``***``. A URL
    that cannot be parsed is not shown at all."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k in hide or any(s in k.lower() for s in
                                                             _SECRET_OPTIONS) else v)
                               for k, v in pairs], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparseable URL>"
