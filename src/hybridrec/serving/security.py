"""Who may call what: the bearer token, the exposure warning and the reload rate limit.

No Flask here: :mod:`.app` applies these to requests, :mod:`.server` warns at start.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import socket
import threading
import time

__all__ = ["Interval", "TokenCheck", "exposure_warning"]


class TokenCheck:
    """Compares an ``Authorization`` header with ``Bearer <token>`` in constant time.

    HTTP carries header bytes; WSGI hands them over decoded as Latin-1, so the bytes the
    client sent are ``header.encode("latin-1")``. They match when they are the token in
    UTF-8 (what curl and browsers send for a non-ASCII token) or, for old clients, in
    Latin-1.
    """

    def __init__(self, token: str):
        self._utf8 = token.encode("utf-8")
        try:
            self._latin1: bytes | None = token.encode("latin-1")
        except UnicodeEncodeError:
            self._latin1 = None

    def matches(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        # strip only spaces and tabs: str.strip() would also take U+0085 and U+00A0, which
        # are the bytes 0x85 / 0xA0 of a UTF-8 token seen through Latin-1
        sent = given.strip(" \t").encode("latin-1", "replace")
        utf8 = hmac.compare_digest(sent, self._utf8)
        latin1 = self._latin1 is not None and hmac.compare_digest(sent, self._latin1)
        return scheme.lower() == "bearer" and (utf8 or latin1)


class Interval:
    """At most one event every ``seconds`` (thread-safe), for one worker process."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._last = -math.inf
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 and the slot taken, or the seconds left until the next one is free."""
        with self._lock:
            now = time.monotonic()
            left = self._last + self.seconds - now
            if left > 0:
                return left
            self._last = now
            return 0.0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def exposure_warning(host: str, token: str | None) -> str | None:
    """A one-line warning when the API listens beyond loopback without a token, else None."""
    if token or _loopback(host):
        return None
    return (
        f"serving on {host}, reachable from other machines, without HYBRIDREC_API_TOKEN: "
        "anyone who reaches it can write features, item metadata and interactions, read "
        "users' features "
        "and force reloads; set HYBRIDREC_API_TOKEN or bind 127.0.0.1"
    )
