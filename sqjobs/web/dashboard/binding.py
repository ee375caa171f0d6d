"""Where the dashboard may listen, and which host names it answers to: checks with no web framework behind them.

sqjobsd runs :func:`check_bind` before starting the dashboard. :class:`AllowedHosts`
is the defence against DNS rebinding: a page on ``evil.example``, whose name
the attacker then points at 127.0.0.1, reaches the dashboard as the same
origin, but its requests say ``Host: evil.example``, which the dashboard
refuses. It answers to:

- the address or name it listens on; when that is a loopback one
  (127.0.0.1, ::1, localhost), to all three;
- when it listens on every interface (0.0.0.0, ::), whose names it cannot
  know: the loopback names and any IP address (an address cannot be rebound:
  only the dashboard itself serves pages under it);
- the names given by ``[dashboard] public_hosts`` or ``--public-host`` (the
  DNS name people use, the name a reverse proxy passes on).

The port, when the header has one, is not checked: a rebinding page differs by
its name, and a reverse proxy may show another port.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass
from typing import Iterable

from ...errors import ConfigError

#: Addresses that only this machine can reach: the dashboard may listen there without a password.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

#: Addresses that mean "every interface of this machine".
ANY_ADDRESS = ("0.0.0.0", "::", "")


def check_bind(host: str, password: str, where: str = "[dashboard]") -> None:
    """Raise ConfigError when ``host`` is reachable from other machines and no password is set."""
    if host not in LOCAL_HOSTS and not password:
        raise ConfigError(f"{where} password is not set: the dashboard listens on {host} only with a password "
                          "(or listen on 127.0.0.1)")


def host_of(header: str) -> str:
    """The name or address in a ``Host`` header value: lowercase, without port, brackets or final dot.

    '' when the value is not a plausible host (empty, spaces, a path).
    """
    value = header.strip().lower()
    if value.startswith("["):  # [::1]:8181
        name, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            return ""
    elif value.count(":") == 1:
        name = value.partition(":")[0]
    else:
        name = value  # a bare IPv6 address has several colons and no port
    name = name.rstrip(".")
    if not name or any(char.isspace() or char in "/?#@\\" for char in name):
        return ""
    return name


def host_of_url(url: str) -> str:
    """The host of an ``Origin`` or ``Referer`` value, as :func:`host_of` gives it ('' for ``null`` or junk)."""
    try:
        name = urllib.parse.urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    return host_of(name if ":" not in name else f"[{name}]")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    return name == "localhost" or (_is_address(name) and ipaddress.ip_address(name).is_loopback)


@dataclass(frozen=True)
class AllowedHosts:
    """The host names (and addresses) the dashboard answers to."""

    #: Names and addresses accepted, as :func:`host_of` gives them.
    names: tuple[str, ...]
    #: True when bound to every interface: any IP address is accepted too.
    any_address: bool = False

    @classmethod
    def for_bind(cls, bind_host: str, public_hosts: Iterable[str] = ()) -> AllowedHosts:
        """What a dashboard listening on ``bind_host``, reached also as ``public_hosts``, answers to."""
        bound = host_of(bind_host)
        everywhere = bind_host.strip() in ANY_ADDRESS or bound in ANY_ADDRESS
        names = list(LOCAL_HOSTS) if everywhere or _is_loopback(bound) else []
        if bound and not everywhere:
            names.append(bound)
        names.extend(host_of(name) for name in public_hosts)
        return cls(tuple(dict.fromkeys(name for name in names if name)), everywhere)

    def accepts(self, name: str) -> bool:
        """Whether ``name`` (from :func:`host_of` or :func:`host_of_url`) is one the dashboard answers to."""
        return bool(name) and (name in self.names or (self.any_address and _is_address(name)))

    def describe(self) -> str:
        """The accepted hosts, for the start-up line and the 400 answer."""
        return ", ".join(self.names) + (", any IP address" if self.any_address else "")
