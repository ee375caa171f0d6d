"""Shared fixtures: a fresh runtime per test and the broker kinds the contract suite runs on."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from sqjobs import app as runtime
from sqjobs.brokers.base import Broker
from sqjobs.brokers.memory import MemoryBroker
from sqjobs.brokers.sqlite import SQLiteBroker
from tests.sqs_server import sqs_auth_server, sqs_prefix, sqs_server  # noqa: F401  (SQS fixtures)
from tests.support import Clock
from tests.tools import PACKAGES, REQUIRE_TOOLS_ENV, missing, required


@pytest.fixture()
def clock() -> Clock:
    """A clock the test moves by hand."""
    return Clock()


@pytest.fixture(autouse=True)
def fresh_runtime() -> Iterator[None]:
    """Each test starts with no configured broker, and leaves none behind."""
    runtime.reset()
    yield
    runtime.reset()


def _sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> Broker:
    return SQLiteBroker(str(tmp_path / "queue.db"))


def _memory(tmp_path: Path, request: pytest.FixtureRequest) -> Broker:
    return MemoryBroker()


def _sqs(tmp_path: Path, request: pytest.FixtureRequest) -> Broker:
    from sqjobs.brokers.sqs import SQSBroker
    from tests.sqs_server import unique_prefix

    server = request.getfixturevalue("sqs_server")
    return SQSBroker(**server.broker_options(unique_prefix()))


#: Broker kind -> factory(tmp_path, request). The contract suite runs once per entry.
BROKER_FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], Broker]] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "sqs": _sqs,
}


@pytest.fixture(params=sorted(BROKER_FACTORIES))
def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """Each broker kind in turn, new and empty."""
    broker = BROKER_FACTORIES[request.param](tmp_path, request)
    yield broker
    broker.close()


# -- outside programs (tests/tools.py) ------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tools(*names): the test runs these outside programs (tests/tools.py)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test whose outside program is missing, or fail it where .ci/run asked for every program."""
    for mark in item.iter_markers("tools"):
        for tool in mark.args:
            why = missing(tool)
            if not why:
                continue
            if required():
                pytest.fail(f"{why}; {REQUIRE_TOOLS_ENV} is set, so nothing may skip", pytrace=False)
            pytest.skip(why)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name, once at the end, the outside programs this machine lacks (their tests were skipped)."""
    reasons = [why for why in map(missing, PACKAGES) if why]
    if reasons:
        outcome = "failed" if required() else "skipped"
        terminalreporter.write_line(f"outside programs missing, their tests {outcome}: " + "; ".join(reasons))
