"""One small module per system: the bodies of :mod:`peerbench.bodies` as that system's jobs.

Each module defines ``cpu``, ``io``, ``pickup`` and ``noop`` jobs (and
``aio`` where the system runs ``async def`` jobs); the workers import it.
"""
