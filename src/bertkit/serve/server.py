"""The HTTP server under the app: uvicorn on a socket bound here, with a concurrency limit and a read deadline.

uvicorn closes idle keep-alive connections, but sets no deadline on *reading* a request: a client that opens
a connection and sends nothing, half its headers, or half its body holds that connection (and, once the
headers are in, a request handler) for as long as it likes. :func:`read_deadline_protocol` closes every
connection whose request has not arrived whole within ``read_timeout_s`` of its first byte (or of the
connection opening). ``limit_concurrency`` caps connections plus running requests; uvicorn answers 503 past it.

The socket is bound before the model loads, so a busy port or a bad address fails at once as an ``OSError``
the command line turns into one line, instead of uvicorn logging and exiting after the load.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

_READING = (h11.IDLE, h11.SEND_BODY)  # the client's side of the connection before its request is whole


def read_deadline_protocol(read_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections whose request is not received within ``read_timeout_s``."""

    class ReadDeadlineProtocol(H11Protocol):
        _read_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._read_deadline is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state not in _READING:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._read_deadline = self.loop.call_later(read_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _too_slow(self) -> None:
            self._read_deadline = None
            if self.conn.their_state in _READING and not self.transport.is_closing():
                self.transport.close()  # a handler waiting for the body sees the client disconnect

    return ReadDeadlineProtocol


def server_config(app: Any, *, read_timeout_s: float = 10.0, limit_concurrency: int | None = 256,
                  shutdown_timeout_s: float = 30.0, log_level: str = "warning") -> uvicorn.Config:
    """The uvicorn settings ``bertkit serve`` runs with (the tests use the same)."""
    return uvicorn.Config(app, http=read_deadline_protocol(read_timeout_s), limit_concurrency=limit_concurrency,
                          timeout_graceful_shutdown=shutdown_timeout_s, log_level=log_level)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (uvicorn starts listening on it). Raises ``OSError``."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
