"""The XML-RPC client of sqjobsd: supervisor's own transport over the daemon's unix socket."""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from sqjobs.errors import DaemonError, DaemonNotRunningError

from .layout import Layout
from .supervisor_conf import load_credentials

#: supervisord's state code when it runs normally (``getState``).
SUPERVISOR_RUNNING = 1
#: Default seconds a call may take; calls that wait for processes to stop pass longer ones.
CALL_TIMEOUT_S = 10.0


class _UnixConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket, with a timeout (supervisor's own has none)."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.socket_path = path

    def connect(self) -> None:
        """Connect to the unix socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class SupervisorClient:
    """Talks to the supervisord of one daemon; every method raises DaemonNotRunningError when none answers."""

    def __init__(self, layout: Layout, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.layout = layout
        credentials = load_credentials(layout)
        transport = SupervisorTransport(credentials.username if credentials else None,
                                        credentials.password if credentials else None,
                                        f"unix://{layout.socket}")
        transport._get_connection = lambda: _UnixConnection(layout.socket, timeout_s)
        self._proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)

    def call(self, method: str, *args: Any) -> Any:
        """Call ``supervisor.<method>(*args)`` and return its result."""
        function = getattr(self._proxy.supervisor, method)
        try:
            return function(*args)
        except PermissionError:
            raise DaemonError(f"no permission to use {self.layout.socket}: run sqjobsd as the user that "
                              "started the daemon") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonNotRunningError(
                f"sqjobsd is not running for {self.layout.config}: no supervisord answers on "
                f"{self.layout.socket} ({exc})") from None
        except xmlrpc.client.Fault as exc:
            raise DaemonError(f"supervisord: {method} failed: {exc.faultString}") from None
        except xmlrpc.client.ProtocolError as exc:
            raise DaemonError(f"supervisord on {self.layout.socket} refused {method}: {exc.errmsg}") from None

    def answers(self) -> bool:
        """True when supervisord answers and runs normally; False when none answers.

        Raises DaemonError when one answers but refuses us (permission, credentials).
        """
        try:
            state = self.call("getState")
        except DaemonNotRunningError:
            return False
        return bool(state.get("statecode") == SUPERVISOR_RUNNING)

    def pid(self) -> int:
        """supervisord's pid."""
        return int(self.call("getPID"))

    def processes(self) -> list[dict[str, Any]]:
        """``getAllProcessInfo``: one dict per process (group, name, statename, pid, start, now...)."""
        return list(self.call("getAllProcessInfo"))
