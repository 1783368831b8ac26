"""Store URLs as they may be shown: in error messages, logs and the CLI's output."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._core import ConfigurationError

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


def check_query(url: str, names: Iterable[str], accepted: Collection[str], kind: str) -> None:
    """Refuse a query option outside ``accepted`` (a misspelled ``?namepsace=`` would otherwise
    fail deep in the driver on first use, or be kept and shown), naming the closest one. The
    URL is shown without the option's value: it may be a misspelled credential
    (``?sentinel_pasword=``). ``kind`` names the URL in the message (``Redis``)."""
    for name in names:
        if name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(f"unknown option {name!r} in {kind} URL "
                                     f"{redact_url(url, hide=(name,))!r}{hint}")
