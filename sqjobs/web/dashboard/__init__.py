"""The web dashboard: queues, dead letters, jobs by id, workers and periodic jobs (``sqjobs dashboard``).

The pages need Flask (``pip install sqjobs[dashboard]``) and live in
:mod:`sqjobs.web.dashboard.server`, which says what guards them; importing this
package needs nothing more than sqjobs (sqjobsd checks :func:`check_bind`).
"""

from __future__ import annotations

from .binding import LOCAL_HOSTS, check_bind

__all__ = ["LOCAL_HOSTS", "check_bind"]
