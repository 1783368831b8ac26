"""Host names as outlay's network-facing parts judge them."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address, without brackets) is this machine only:
    ``localhost`` or a loopback address. Any other name is not, whatever it resolves to."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
