"""The address a connection comes from, as the admin API lists it.

Behind a reverse proxy every connection comes from the proxy; the client's address is in
`X-Forwarded-For`, which anyone can send. It is believed only from the proxies named in
`SINAL_TRUSTED_PROXIES`, and then the address taken is the rightmost one that is not itself
a trusted proxy: the leftmost ones are whatever the client chose to write.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from api.settings import IPNetwork

MAX_ADDRESS = 64


def remote_address(
    client: Sequence[object] | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]
) -> str | None:
    peer = str(client[0]) if client else None
    if peer is None or not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop[:MAX_ADDRESS]
    return hops[0][:MAX_ADDRESS] if hops else peer


def _is_trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
