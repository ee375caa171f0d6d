"""Every row family the harness knows, in the order the table lists them."""

from __future__ import annotations

from .base import System
from .celery_peer import CeleryPeer
from .dramatiq_peer import DramatiqPeer
from .huey_peer import HueyPeer
from .raw_peer import RawPeer
from .rq_peer import RqPeer
from .settings import DRAMATIQ_PREFETCH
from .sqjobs_peer import SqjobsPeer

SYSTEMS: list[System] = [
    SqjobsPeer(),
    RawPeer(),
    HueyPeer("sqlite"),
    HueyPeer("redis"),
    DramatiqPeer(),
    DramatiqPeer(prefetch=DRAMATIQ_PREFETCH),
    CeleryPeer(),
    RqPeer(),
]


def by_name(name: str) -> System:
    """The system called ``name``; KeyError if none."""
    for system in SYSTEMS:
        if system.name == name:
            return system
    raise KeyError(name)


def selected(only: list[str] | None) -> list[System]:
    """The systems ``--only`` names, all without it; ValueError for an unknown name.

    A name is a row's name (``dramatiq`` is the default Dramatiq row only), or
    else a family (``huey`` is both Huey rows).
    """
    if not only:
        return list(SYSTEMS)
    names = {system.name for system in SYSTEMS}
    families = {system.family for system in SYSTEMS}
    unknown = [name for name in only if name not in names | families]
    if unknown:
        raise ValueError(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(sorted(names | families))}")
    return [system for system in SYSTEMS
            if system.name in only or (system.family in only and system.family not in names)]
