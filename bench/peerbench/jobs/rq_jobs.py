"""The bodies as RQ jobs: RQ runs plain functions by import path, so these are the bodies themselves.

RQ runs an ``async def`` job with ``asyncio.run`` in its work horse, one at a time.
"""

from ..bodies import aio, cpu, io, noop, pickup

__all__ = ["aio", "cpu", "io", "noop", "pickup"]
