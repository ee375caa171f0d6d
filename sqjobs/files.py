"""Writing a file so that a reader never sees it half-written."""

from __future__ import annotations

import os


def atomic_write(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file next to it, then a rename), with ``mode``.

    Raises OSError; the temporary file is removed when the write fails.
    """
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
