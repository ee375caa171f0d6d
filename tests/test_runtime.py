"""The process's settings and broker: choosing a broker keeps the other settings."""

from __future__ import annotations

from pathlib import Path

import pytest

import sqjobs
from sqjobs import app as runtime
from sqjobs import job
from sqjobs.status.store import forget_stores, get_store
from tests.support import write_config


@job(name="runtime_tests.double")
def double(value: int) -> int:
    """Return twice ``value`` (untracked unless ``track = all``)."""
    return value * 2


@pytest.fixture()
def app_conf(tmp_path: Path) -> Path:
    """A config file tracking every job in its own status database."""
    return write_config(tmp_path / "app.conf", {"sqjobs": {
        "broker": f"sqlite:///{tmp_path / 'queue.db'}",
        "database": f"sqlite:///{tmp_path / 'app-status.db'}",
        "track": "all",
    }})


@pytest.fixture(autouse=True)
def closed_stores() -> object:
    """Close the status databases a test opened."""
    yield None
    forget_stores()


def test_create_eager_broker_after_configure_keeps_track_and_database(app_conf: Path, tmp_path: Path) -> None:
    sqjobs.configure(str(app_conf))
    sqjobs.create_eager_broker()
    settings = runtime.get_settings()
    assert settings.get("sqjobs", "track") == "all"
    assert settings.database_url == f"sqlite:///{tmp_path / 'app-status.db'}"
    handle = double.delay(21)
    assert handle.result == 42
    record = get_store(f"sqlite:///{tmp_path / 'app-status.db'}").get(handle.id)
    assert record is not None and record.status is sqjobs.Status.SUCCESS and record.result == 42


@pytest.mark.parametrize("broker", ["eager://", "instance"])
def test_configure_with_only_a_broker_keeps_the_settings_read_before(app_conf: Path, broker: str) -> None:
    sqjobs.configure(str(app_conf))
    chosen = sqjobs.configure(broker="eager://" if broker == "instance" else broker)
    assert chosen.source == str(app_conf)
    assert runtime.get_settings().get("sqjobs", "track") == "all"
    assert sqjobs.current_app().eager


def test_configure_with_only_a_broker_first_reads_the_sqjobs_config_file(
        app_conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQJOBS_CONFIG", str(app_conf))
    sqjobs.create_eager_broker()
    assert runtime.get_settings().source == str(app_conf)
    assert runtime.get_settings().get("sqjobs", "track") == "all"


def test_configure_with_a_file_still_replaces_the_settings(app_conf: Path, tmp_path: Path) -> None:
    sqjobs.configure(str(app_conf))
    other = write_config(tmp_path / "other.conf", {"sqjobs": {"track": "none"}})
    sqjobs.configure(str(other), broker="eager://")
    assert runtime.get_settings().get("sqjobs", "track") == "none"
