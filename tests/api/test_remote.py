"""The address a connection is listed with (`api/remote.py`)."""

from __future__ import annotations

import ipaddress

from api.remote import remote_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    assert remote_address(("203.0.113.9", 5000), "198.51.100.1", ()) == "203.0.113.9"
    assert remote_address(("203.0.113.9", 5000), "198.51.100.1", PROXIES) == "203.0.113.9"
    assert remote_address(("10.1.2.3", 5000), "198.51.100.1", PROXIES) == "198.51.100.1"
    assert remote_address(("10.1.2.3", 5000), None, PROXIES) == "10.1.2.3"
    assert remote_address(None, "198.51.100.1", PROXIES) is None


def test_the_rightmost_address_that_is_not_a_trusted_proxy_is_taken() -> None:
    # The client wrote the first one itself; the proxies appended the rest.
    chain = "1.2.3.4, 198.51.100.7, 10.9.9.9"
    assert remote_address(("10.1.2.3", 1), chain, PROXIES) == "198.51.100.7"
    assert remote_address(("10.1.2.3", 1), "10.0.0.5, 10.0.0.6", PROXIES) == "10.0.0.5"
