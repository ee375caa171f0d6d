"""Outage logging, stepped with an injected clock: one line per failed try, tracebacks only at DEBUG."""

from __future__ import annotations

import logging

import pytest

from sqjobs.errors import BrokerConnectionError
from sqjobs.outage import Outage
from tests.support import Clock

pytestmark = pytest.mark.faults

LOGGER = "sqjobs.test_outage"


@pytest.fixture()
def outage(clock: Clock) -> Outage:
    """An outage of "broker" while "receiving", pauses from 1 s doubling up to 8 s."""
    return Outage(logging.getLogger(LOGGER), "broker", "receiving", 1.0, 8.0, clock=clock)


def _fail(outage: Outage, clock: Clock, times: int, error: BaseException) -> list[float]:
    pauses = []
    for _ in range(times):
        pauses.append(outage.failed(error))
        clock.now += pauses[-1]
    return pauses


def test_each_failed_try_is_one_warning_without_traceback_and_the_pause_doubles_to_its_cap(
        outage: Outage, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    pauses = _fail(outage, clock, 6, BrokerConnectionError("cannot reach SQS"))
    assert pauses == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [record.levelno for record in caplog.records] == [logging.WARNING] * 6
    assert all(record.exc_info is None for record in caplog.records)
    assert caplog.records[0].getMessage() == ("broker error while receiving (failure 1); trying again in 1 s: "
                                              "BrokerConnectionError: cannot reach SQS")
    assert "(failure 6, failing for 23 s); trying again in 8 s" in caplog.records[-1].getMessage()
    assert "Traceback" not in caplog.text


def test_one_line_when_it_works_again_and_none_when_it_never_failed(
        outage: Outage, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    outage.recovered()
    assert caplog.records == []
    _fail(outage, clock, 3, BrokerConnectionError("down"))
    clock.now += 0.5
    outage.recovered()
    outage.recovered()
    [line] = [record for record in caplog.records if record.levelno == logging.INFO]
    assert line.getMessage() == "broker reachable again after 8 s (3 failed tries)"
    assert not outage.ongoing
    caplog.clear()
    assert outage.failed(BrokerConnectionError("down again")) == 1.0  # a new outage starts from the first pause
    assert "(failure 1)" in caplog.records[0].getMessage()


def test_at_debug_every_failure_carries_its_traceback(outage: Outage, clock: Clock,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    _fail(outage, clock, 2, BrokerConnectionError("down"))
    assert [record.exc_info is not None for record in caplog.records] == [True, True]


def test_an_unexpected_error_shows_its_traceback_once_per_outage(outage: Outage, clock: Clock,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    _fail(outage, clock, 3, KeyError("a bug"))
    assert [record.exc_info is not None for record in caplog.records] == [True, False, False]
    outage.recovered()
    caplog.clear()
    _fail(outage, clock, 1, KeyError("a bug"))
    assert caplog.records[0].exc_info is not None
