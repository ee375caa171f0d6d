"""An ``sqjobs_beats`` table of the earlier shape (keyed by job and fire time) is upgraded in place.

On SQLite, PostgreSQL and MariaDB, each in a database of its own made for
the test (the shared test databases already hold the new shape): the key
becomes (broker, job, fire time), the claims made before keep their meaning
(the legacy broker, counted by every deployment as its own), and processes
that upgrade it at the same moment all succeed.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import peewee
import pytest

from sqjobs import PeriodicJob
from sqjobs.brokers.sqlite import SQLiteBroker
from sqjobs.message import decode
from sqjobs.schedule.beater import BEATS_TABLE, CLAIM_TIMEOUT_S, LEGACY_BROKER, Beater, BeatStore
from sqjobs.status.database import PreciseDateTimeField, open_database
from sqjobs.status.migrations import key_columns
from tests.scratch_databases import scratch_database
from tests.status_fixtures import DATABASE_KINDS, MYSQL_URL, POSTGRESQL_URL

#: The shape of the claims table before claims named their broker.
OLD_SHAPE_SQL = {
    "sqlite": 'CREATE TABLE "sqjobs_beats" ("job" VARCHAR(191) NOT NULL, "fire_at" DATETIME NOT NULL, '
              '"beater" VARCHAR(191) NOT NULL, "claimed_at" DATETIME NOT NULL, "sent_at" DATETIME, '
              'PRIMARY KEY ("job", "fire_at"))',
    "postgresql": 'CREATE TABLE "sqjobs_beats" ("job" VARCHAR(191) NOT NULL, "fire_at" TIMESTAMP NOT NULL, '
                  '"beater" VARCHAR(191) NOT NULL, "claimed_at" TIMESTAMP NOT NULL, "sent_at" TIMESTAMP, '
                  'PRIMARY KEY ("job", "fire_at"))',
    "mysql": "CREATE TABLE `sqjobs_beats` (`job` VARCHAR(191) NOT NULL, `fire_at` DATETIME(6) NOT NULL, "
             "`beater` VARCHAR(191) NOT NULL, `claimed_at` DATETIME(6) NOT NULL, `sent_at` DATETIME(6), "
             "PRIMARY KEY (`job`, `fire_at`))",
}
JOB = "report.nightly"


class Nightly(PeriodicJob):
    name = JOB
    queue = "beats"
    schedule = "20 3 * * *"
    timezone = "UTC"

    def run(self) -> None:
        pass


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


@pytest.fixture(params=DATABASE_KINDS)
def scratch_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, URL) of an empty database of each kind, dropped afterwards."""
    kind = request.param
    if kind == "sqlite":
        yield kind, f"sqlite:///{tmp_path / 'status.db'}"
        return
    server_url = {"postgresql": POSTGRESQL_URL, "mysql": MYSQL_URL}[kind]
    with scratch_database(server_url) as url:
        yield kind, url


def old_table(kind: str, url: str) -> peewee.Database:
    """The claims table of the earlier shape in ``url``, with one claim sent and one whose beater died."""
    database = open_database(url)
    database.execute_sql(OLD_SHAPE_SQL[kind])

    class OldClaim(peewee.Model):
        job = peewee.CharField(max_length=191)
        fire_at = PreciseDateTimeField()
        beater = peewee.CharField(max_length=191)
        claimed_at = PreciseDateTimeField()
        sent_at = PreciseDateTimeField(null=True)

        class Meta:
            table_name = BEATS_TABLE
            primary_key = peewee.CompositeKey("job", "fire_at")

    OldClaim._meta.set_database(database)
    sent = datetime(2026, 5, 1, 3, 20)
    OldClaim.insert(job=JOB, fire_at=sent, beater="old-beater", claimed_at=sent, sent_at=sent).execute()
    died = datetime(2026, 5, 1, 1, 0)
    OldClaim.insert(job="report.hourly", fire_at=died, beater="dead-beater", claimed_at=died).execute()
    assert key_columns(database, BEATS_TABLE) == ["job", "fire_at"]
    return database


def test_the_claims_table_of_the_earlier_shape_is_upgraded_in_place(scratch_url: tuple[str, str],
                                                                   tmp_path: Path) -> None:
    kind, url = scratch_url
    database = old_table(kind, url)
    # Three processes start at once and each upgrades the table (threads: one connection each).
    stores = [BeatStore(url) for _ in range(3)]
    barrier, errors = threading.Barrier(len(stores)), []

    def upgrade(store: BeatStore) -> None:
        barrier.wait(10)
        try:
            store.create_tables()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []

    assert key_columns(database, BEATS_TABLE) == ["broker", "job", "fire_at"]
    assert {column.name for column in database.get_columns(BEATS_TABLE)} == {
        "broker", "job", "fire_at", "beater", "claimed_at", "sent_at"}
    store = stores[0]
    [row] = store.claims(JOB)
    assert row == {"broker": LEGACY_BROKER, "job": JOB, "fire_at": datetime(2026, 5, 1, 3, 20),
                   "beater": "old-beater", "claimed_at": datetime(2026, 5, 1, 3, 20),
                   "sent_at": datetime(2026, 5, 1, 3, 20)}

    # The earlier claim is every deployment's: the 03:20 it sent is not sent again, the next one is.
    broker = SQLiteBroker(str(tmp_path / "queue.db"))
    beater = Beater(broker, [Nightly], store)
    assert beater.tick(utc(2026, 5, 1, 12)) == []
    assert [s.fire_at for s in beater.tick(utc(2026, 5, 2, 3, 20, 1))] == [utc(2026, 5, 2, 3, 20)]
    [message] = broker.receive("beats", 10, 0)
    assert decode(message.body, message.message_id).extra["scheduled_for"] == "2026-05-02T03:20:00+00:00"

    # An earlier claim left unsent (its beater died) is taken over, once, whatever the deployment.
    hourly = type("Hourly", (PeriodicJob,), {"name": "report.hourly", "queue": "beats", "schedule": "0 * * * *",
                                             "run": lambda self: None, "__module__": __name__})
    other = SQLiteBroker(str(tmp_path / "other-queue.db"))
    late = utc(2026, 5, 1, 1) + timedelta(seconds=CLAIM_TIMEOUT_S + 1)
    taken = [Beater(b, [hourly], BeatStore(url)).tick(late) for b in (broker, other)]
    assert [[s.fire_at for s in sent] for sent in taken] == [[utc(2026, 5, 1, 1)], []]
    [claim] = store.claims("report.hourly")
    assert claim["broker"] == LEGACY_BROKER and claim["sent_at"] is not None

    # A beater of the earlier version still writes claims: they get the legacy broker.
    quote = '`' if kind == "mysql" else '"'
    database.execute_sql(f"INSERT INTO {quote}{BEATS_TABLE}{quote} (job, fire_at, beater, claimed_at) "
                         f"VALUES ('report.old', '2026-05-03 00:00:00', 'old-beater', '2026-05-03 00:00:00')")
    assert [c["broker"] for c in store.claims("report.old")] == [LEGACY_BROKER]
    for each in stores:
        each.close()
    database.close()
