"""A TCP proxy on 127.0.0.1 that tests stop and start again, to cut a real service off for a while.

While stopped nothing listens on its port (connections are refused) and
every connection it carried is closed, as when a server or the network
goes away; started again, it listens on the same port and forwards anew.

In black-hole mode (:meth:`TcpProxy.black_hole`) it keeps listening and
every connection stays open, but nothing is forwarded either way: bytes
sent to it are taken and get no answer, as when a network drops packets.
New connections are accepted and held the same way. :meth:`TcpProxy.forward`
ends it: what was held is delivered late, in order, as TCP retransmits once
a network heals.
"""

from __future__ import annotations

import socket
import threading

from tests.sqs_server import free_port

#: Bytes forwarded per read.
CHUNK_BYTES = 65536


class TcpProxy:
    """Forwards connections on ``port`` (a free one by default) to 127.0.0.1:``target_port``.

    Created stopped: call :meth:`start`. Use as a context manager to stop it at the end.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        #: Set while bytes flow; cleared in black-hole mode (the pumps hold what they read).
        self._flowing = threading.Event()
        self._flowing.set()

    @property
    def running(self) -> bool:
        """True while the proxy listens."""
        return self._listener is not None

    def start(self) -> TcpProxy:
        """Listen on the port and forward each connection; return self."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), name="tcp-proxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def black_hole(self) -> None:
        """Keep every connection open but forward nothing, either way, until :meth:`forward`."""
        self._flowing.clear()

    def forward(self) -> None:
        """End black-hole mode: deliver what was held and forward again."""
        self._flowing.set()

    def stop(self) -> None:
        """Stop listening and close every connection it carries (both sides); ends black-hole mode."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept call
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        self._flowing.set()  # pumps holding bytes wake up, find their sockets closed and end
        for thread in self._threads:
            thread.join(5)
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), name="tcp-proxy-pump",
                                          daemon=True)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(CHUNK_BYTES)
                if not data:
                    break
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        for side in (source, sink):
            try:
                side.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            for side in (source, sink):
                if side in self._connections:
                    self._connections.discard(side)
                    side.close()
