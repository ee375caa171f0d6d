"""Small and read-only filesystems, mounted for real, for the tests of full disks and read-only files.

Mounting needs root. CI runs the tests as root (``CI`` is set there), so a
mount that fails fails the test; elsewhere a test that needs root is skipped
with a reason when run as another user.
"""

from __future__ import annotations

import errno
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def require_root() -> None:
    """Skip the test unless it runs as root; under CI (``CI`` set) fail instead, since CI runs as root."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        raise AssertionError("this test mounts a filesystem and CI must run it as root")
    pytest.skip("mounting a filesystem needs root (CI runs the tests as root)")


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)} failed: {done.stderr.strip()}"


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``600k``) on ``path`` for the duration; unmount it after."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        assert os.path.ismount(path), f"{path} is not a mount point after mounting a tmpfs on it"
        yield path
    finally:
        _run("umount", "-l", str(path))


@contextmanager
def read_only_view(source: Path, target: Path) -> Iterator[Path]:
    """Show the folder ``source`` at ``target`` read-only (a read-only bind mount), as root.

    Another user cannot mount: the files of ``source`` and the folder are made
    read-only with chmod instead (which does not stop root), and ``source`` is returned.
    """
    if os.geteuid() != 0 and not os.environ.get("CI"):
        modes = {item: item.stat().st_mode for item in [source, *source.iterdir()]}
        for item in modes:
            item.chmod(0o555 if item.is_dir() else 0o444)
        try:
            yield source
        finally:
            for item, mode in modes.items():
                item.chmod(mode)
        return
    require_root()
    target.mkdir(parents=True, exist_ok=True)
    _run("mount", "--bind", str(source), str(target))
    try:
        _run("mount", "-o", "remount,bind,ro", str(target))
        probe = target / "probe"
        try:
            probe.touch()
        except OSError as exc:
            assert exc.errno == errno.EROFS, exc
        else:
            raise AssertionError(f"{target} is writable after a read-only bind mount")
        yield target
    finally:
        _run("umount", "-l", str(target))


def fill_up(folder: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of ``folder`` with one file until it is full, then free about ``leave_bytes``.

    Returns the file: deleting it gives the space back.
    """
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    os.truncate(filler, max(filler.stat().st_size - leave_bytes, 0))
    return filler
