"""A tiny Redis client: the few commands the harness and the job bodies use, over one socket.

Every system's job body talks to Redis through this same client, so the body
costs the same whatever runs it, and the sqjobs and raw rows need no package
beyond sqjobs' own. It speaks RESP2 over TCP; it is not thread-safe (each
thread takes its own with :func:`for_this_thread`), and a forked child opens
its own connection on first use.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from .settings import ENV_REDIS, redis_address

Reply = int | bytes | list | None


class RedisError(Exception):
    """Redis answered with an error, or could not be reached."""


class Redis:
    """One connection to one Redis database (``host:port/db``)."""

    def __init__(self, address: str, timeout_s: float = 30.0) -> None:
        host_port, _, db = address.partition("/")
        host, _, port = host_port.partition(":")
        self.host, self.port, self.db = host, int(port or 6379), int(db or 0)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._pid = 0

    def _connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise RedisError(f"cannot reach Redis at {self.host}:{self.port}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._file, self._pid = sock, sock.makefile("rb"), os.getpid()
        if self.db:
            self.command("SELECT", self.db)

    def command(self, *words: Any) -> Reply:
        """Send one command; return its reply (int, bytes, list or None). Raises RedisError."""
        if self._sock is None or self._pid != os.getpid():
            self._connect()
        assert self._sock is not None
        parts = [f"*{len(words)}\r\n".encode()]
        for word in words:
            data = word if isinstance(word, bytes) else str(word).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> Reply:
        line = self._file.readline()
        if not line:
            raise RedisError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._file.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise RedisError(f"unexpected reply {line!r}")

    def incr(self, key: str) -> int:
        """INCR ``key``; return the new value."""
        value = self.command("INCR", key)
        assert isinstance(value, int)
        return value

    def get_int(self, key: str) -> int:
        """The integer at ``key`` (0 when absent)."""
        value = self.command("GET", key)
        return int(value) if isinstance(value, bytes) else 0

    def rpush(self, key: str, value: str) -> None:
        """RPUSH ``value`` on the list at ``key``."""
        self.command("RPUSH", key, value)

    def blpop(self, key: str, timeout_s: float) -> bytes | None:
        """Pop the first item of ``key``, waiting up to ``timeout_s``; None on time-out."""
        if self._sock is None or self._pid != os.getpid():
            self._connect()
        assert self._sock is not None
        self._sock.settimeout(timeout_s + self.timeout_s)
        try:
            reply = self.command("BLPOP", key, f"{timeout_s:.3f}")
        finally:
            self._sock.settimeout(self.timeout_s)
        return reply[1] if isinstance(reply, list) else None

    def flushdb(self) -> None:
        """Empty this database (only this one)."""
        self.command("FLUSHDB")

    def server_version(self) -> str:
        """The server's ``redis_version``."""
        info = self.command("INFO", "server")
        text = info.decode() if isinstance(info, bytes) else ""
        for line in text.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"

    def close(self) -> None:
        """Close the connection (a later command reconnects)."""
        if self._sock is not None:
            self._sock.close()
        self._sock = self._file = None


_local = threading.local()


def for_this_thread() -> Redis:
    """This thread's client for the database named in the environment (the runner sets it)."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = Redis(os.environ.get(ENV_REDIS) or redis_address())
    return client
