"""What a run ran on: CPU, cores, Python, SQLite, Redis, each library's version, the sqjobs commit."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import time

from .base import System
from .counter import Redis
from .settings import REPO_DIR


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def sqjobs_commit() -> str:
    """The checkout's commit, and the last commit that changed ``sqjobs/`` ("+ changes": uncommitted ones)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        library = git("log", "-1", "--format=%h", "--abbrev=12", "--", "sqjobs")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "sqjobs")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    return f"{head} (sqjobs/ as of {library}{' + changes' if dirty else ''})"


def version_of(distribution: str) -> str:
    """The installed version of ``distribution``, or "not installed"."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe(systems: list[System], redis: Redis) -> list[str]:
    """Lines describing the machine and the versions of everything measured."""
    try:
        redis_version = redis.server_version()
    except Exception as exc:  # reported, not fatal: the rows will say what failed
        redis_version = f"unreachable ({exc})"
    names = list(dict.fromkeys(name for system in systems
                               for name in (system.distribution, *system.related) if name))
    versions = [f"{name} {version_of(name)}" for name in names]
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; sqjobs commit {sqjobs_commit()}",
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; Redis server {redis_version}",
        "libraries: " + (", ".join(versions) or "none"),
    ]
