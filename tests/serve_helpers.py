"""A real uvicorn server on a free loopback port, configured as ``bertkit serve`` configures it."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from bertkit.serve.server import server_config


class Server:
    """uvicorn in a thread on a free 127.0.0.1 port, with the read deadline and concurrency limit of the CLI."""

    def __init__(self, app, read_timeout_s: float = 10.0, limit_concurrency: int = 256) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(server_config(app, read_timeout_s=read_timeout_s,
                                                   limit_concurrency=limit_concurrency, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric(text: str, name: str) -> float:
    """The sum of every sample whose line starts with ``name`` (all label combinations)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))
