"""The ``sqjobsd`` command (the daemon arrives with its own issue)."""

from __future__ import annotations

import sys


def main() -> None:
    """Say that the daemon is not there yet."""
    print("sqjobsd: not yet available; run `sqjobs worker -c CONFIG QUEUE` under your supervisor", file=sys.stderr)
    sys.exit(2)
