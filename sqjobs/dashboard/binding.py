"""Where the dashboard may listen: a check with no web framework behind it (sqjobsd runs it before starting)."""

from __future__ import annotations

from ..errors import ConfigError

#: Addresses that only this machine can reach: the dashboard may listen there without a password.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_bind(host: str, password: str, where: str = "[dashboard]") -> None:
    """Raise ConfigError when ``host`` is reachable from other machines and no password is set."""
    if host not in LOCAL_HOSTS and not password:
        raise ConfigError(f"{where} password is not set: the dashboard listens on {host} only with a password "
                          "(or listen on 127.0.0.1)")
