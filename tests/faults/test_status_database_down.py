"""The status database (PostgreSQL behind a TCP proxy) goes down while tracked jobs run, then comes back.

While it is down, ``.delay()`` of a tracked job fails loudly and sends
nothing; the worker keeps every message whose outcome it could not record
(nothing is deleted, nothing runs twice) and records them once the
database is back. Nothing is lost.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import sqjobs
from sqjobs import Status
from sqjobs.errors import StatusStoreError
from sqjobs.status.store import forget_stores, get_store
from tests.faults import fault_jobs
from tests.faults.drain import fault_config
from tests.status_fixtures import POSTGRESQL_URL
from tests.support import read_lines, start_worker, stop_process, wait_until, worker_log
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.faults

JOBS = 12
THREADS = 2


def _proxied(proxy: TcpProxy) -> str:
    parts = urlsplit(POSTGRESQL_URL)
    return parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{proxy.port}").geturl()


def test_tracked_jobs_through_a_status_database_outage(tmp_path: Path) -> None:
    record, release = tmp_path / "record.txt", tmp_path / "release"
    with TcpProxy(urlsplit(POSTGRESQL_URL).port or 5432).start() as proxy:
        url = _proxied(proxy)
        config = fault_config(tmp_path, database=url)
        sqjobs.configure(str(config))
        broker = sqjobs.get_broker()
        handles = [fault_jobs.tracked_wait.delay(str(record), f"job{i}", str(release)) for i in range(JOBS)]
        worker = start_worker(config, ["default"], "--threads", str(THREADS), "--prefetch", "2")
        try:
            wait_until(lambda: len(read_lines(record)) == THREADS, what="two jobs to start")
            proxy.stop()  # the database is gone: its connections closed, its port refusing
            forget_stores()

            with pytest.raises(StatusStoreError) as failed:
                fault_jobs.tracked_wait.delay(str(record), "during", str(release))
            message = str(failed.value)
            assert "\n" not in message and "status database" in message and "Connection refused" in message, message
            stats = broker.stats("default")
            assert stats.visible + stats.in_flight == JOBS, "the failed .delay() sent nothing"

            release.touch()  # the running jobs end; their outcome cannot be recorded
            wait_until(lambda: sum(line.startswith("end") for line in read_lines(record)) >= THREADS,
                       what="the running jobs to end")
            wait_until(lambda: "status database unavailable" in worker_log(worker),
                       what="the worker to retry the status database")
            stats = broker.stats("default")
            assert stats.visible + stats.in_flight == JOBS, "no message deleted before its outcome is recorded"
            assert worker.poll() is None

            proxy.start()
            store = get_store(url)

            def all_recorded() -> bool:
                rows = [store.get(handle.id) for handle in handles]
                return all(row is not None and row.status is Status.SUCCESS for row in rows)

            wait_until(all_recorded, timeout_s=60, what="every outcome to be recorded")
            wait_until(lambda: broker.stats("default").in_flight + broker.stats("default").visible == 0,
                       what="every message to be deleted")
        finally:
            release.touch()
            code = stop_process(worker)
    assert code == 0, worker_log(worker)
    ends = Counter(line.split()[1] for line in read_lines(record) if line.startswith("end"))
    assert ends == Counter({f"job{i}": 1 for i in range(JOBS)}), "each ran once, none lost"
    assert "during" not in ends
    assert broker.stats("default-dead").visible == 0
