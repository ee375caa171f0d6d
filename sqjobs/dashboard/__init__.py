"""The web dashboard: queues, dead letters, jobs by id, workers and periodic jobs (``sqjobs dashboard``).

Needs Flask: ``pip install sqjobs[dashboard]``. See :mod:`sqjobs.dashboard.server`
for what guards it.
"""

from __future__ import annotations

from .server import LOCAL_HOSTS, check_bind, create_app, serve

__all__ = ["LOCAL_HOSTS", "check_bind", "create_app", "serve"]
