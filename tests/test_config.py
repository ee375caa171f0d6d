"""The one config file: typed settings, and errors that name the file, section and key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sqjobs.config import (
    SCHEMA,
    Settings,
    default_settings,
    load,
    load_settings,
    set_settings_source,
    settings_from_mapping,
)
from sqjobs.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "sqjobs.conf.example"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sqjobs.conf"
    path.write_text(text)
    return path


def test_the_documented_example_loads_with_every_key(tmp_path: Path) -> None:
    settings = load(str(EXAMPLE))
    for section, keys in SCHEMA.items():
        written = settings.sections.get(section if section != "worker" else "worker:default", {})
        assert set(written) == set(keys), f"[{section}] documents {sorted(written)}, the schema has {sorted(keys)}"
    assert settings.get("sqjobs", "broker").startswith("sqlite:///")
    assert settings.workers and settings.workers[0].name == "default"
    assert settings.get("sqs", "wait_time_s") == 20


def test_values_are_typed_and_relative_sqlite_paths_follow_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
[sqjobs]
broker = sqlite:///data/queue.db   ; inline comment
jobs = myapp.jobs, billing.jobs
path = src

[worker:emails]
queues = emails, default
processes = 3
visibility_timeout_s = 2.5
""")
    settings = load(str(path))
    assert settings.broker_url == f"sqlite:///{tmp_path}/data/queue.db"
    assert settings.job_modules == ("myapp.jobs", "billing.jobs")
    assert settings.import_paths == (os.path.join(str(tmp_path), "src"),)
    group = settings.worker_group("emails")
    assert (group.queues, group.processes, group.visibility_timeout_s) == (("emails", "default"), 3, 2.5)
    assert settings.get("sqjobs", "database") == "sqlite:///sqjobs.db"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[sqjobs]\nbrokr = memory://\n", "[sqjobs] brokr: unknown key"),
        ("[workers:x]\nqueues = a\n", "[workers:x]: unknown section"),
        ("[worker:default]\nprocesses = two\n", "[worker:default] processes = 'two'"),
        ("[worker:default]\nprocesses = -1\n", "[worker:default] processes = '-1': must not be negative"),
        ("[sqs]\nwait_time_s = soon\n", "[sqs] wait_time_s = 'soon'"),
        ("[sqjobs]\ntrack = sometimes\n", "[sqjobs] track = 'sometimes': must be all, marked or none"),
        ("[worker:]\nqueues = a\n", "a worker section needs a name"),
        ("[worker:x]\nqueues =\n", "[worker:x] queues: names no queue"),
        ("no section header\n", "not a valid INI file"),
        ("[sqjobs]\nbroker = sqllite:///q.db\n", "[sqjobs] broker = 'sqllite:///q.db': unknown scheme 'sqllite'; "
                                                  "use sqlite:///PATH, sqs, memory:// or eager://"),
        ("[sqjobs]\nbroker = sqlite:///\n", "[sqjobs] broker = 'sqlite:///': names no file; use sqlite:///PATH"),
        ("[sqjobs]\nbroker = /var/q.db\n", "[sqjobs] broker = '/var/q.db': not a broker URL"),
    ],
)
def test_bad_lines_name_the_file_section_and_key(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(path) in str(caught.value)
    assert named in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(str(tmp_path / "nope.conf"))


def test_no_file_means_the_embedded_defaults_in_the_current_directory(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SQJOBS_CONFIG", raising=False)
    settings = load_settings()
    assert settings.source is None
    assert settings.broker_url == f"sqlite:///{tmp_path}/sqjobs-queue.db"
    assert default_settings().workers[0].queues == ("default",)


def test_sqjobs_config_environment_variable_names_the_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[sqjobs]\nbroker = memory://\n")
    monkeypatch.setenv("SQJOBS_CONFIG", str(path))
    assert load_settings().broker_url == "memory://"


def test_unknown_worker_group_is_an_error(tmp_path: Path) -> None:
    settings = load(str(write(tmp_path, "[worker:a]\nqueues = a\n")))
    with pytest.raises(ConfigError, match=r"no \[worker:b\] section"):
        settings.worker_group("b")


def test_a_config_file_that_is_not_utf8_is_a_config_error_naming_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "sqjobs.conf"
    path.write_bytes(b"[sqjobs]\n; r\xe9sum\xe9 of the setup\nbroker = memory://\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(caught.value) == f"{path}: line 2: not UTF-8 text (byte 0xe9); save the config file as UTF-8"


@pytest.mark.parametrize("url", ["not a url", "localhost:9324", "ftp://example.com", "http://", "http://h:99999"])
def test_an_endpoint_url_that_is_not_an_http_url_names_file_section_and_key(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f"[sqs]\nendpoint_url = {url}\n")
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(caught.value).startswith(f"{path}: [sqs] endpoint_url = {url!r}: must be an http:// or https:// URL")


@pytest.mark.parametrize("url", ["", "http://127.0.0.1:9324", "https://sqs.eu-west-1.amazonaws.com/"])
def test_an_empty_or_http_endpoint_url_is_accepted(tmp_path: Path, url: str) -> None:
    assert load(str(write(tmp_path, f"[sqs]\nendpoint_url = {url}\n"))).get("sqs", "endpoint_url") == url


def test_the_example_file_is_generated_from_the_declarations() -> None:
    from sqjobs.settings import example_file

    assert EXAMPLE.read_text() == example_file(), "run: python -m sqjobs.settings > etc/sqjobs.conf.example"


def test_a_mapping_is_read_like_the_file_and_overrides_it_key_by_key(tmp_path: Path) -> None:
    base = load(str(write(tmp_path, "[sqs]\nregion = eu-west-1\nqueue_prefix = file-\n\n[worker:a]\nprefetch = 3\n")))
    merged = settings_from_mapping({"sqs": {"queue_prefix": "dict-"}, "worker:a": {"threads": 4},
                                    "worker:b": {"queues": ["x", "y"]}}, "settings.SQJOBS", base)
    assert (merged.get("sqs", "region"), merged.get("sqs", "queue_prefix")) == ("eu-west-1", "dict-")
    assert (merged.worker_group("a").prefetch, merged.worker_group("a").threads) == (3, 4)
    assert merged.worker_group("b").queues == ("x", "y")
    assert merged.source == base.source and base.get("sqs", "queue_prefix") == "file-"


@pytest.mark.parametrize(
    ("mapping", "named"),
    [
        ({"worker:default": {"threads": 0}}, "settings.SQJOBS['worker:default']['threads'] = 0: must be at least 1"),
        ({"sqjobs": {"brokr": "memory://"}}, "settings.SQJOBS['sqjobs']['brokr']: unknown key (known keys: broker"),
        ({"sqss": {}}, "settings.SQJOBS['sqss']: unknown section"),
        ({"worker:": {}}, "settings.SQJOBS['worker:']: a worker section needs a name"),
        ({"worker:x": {"queues": []}}, "settings.SQJOBS['worker:x'] queues: names no queue"),
        ({"sqjobs": "broker = sqs"}, "settings.SQJOBS['sqjobs']: must be a dict"),
        ({"sqjobs": {"broker": "sqs:/"}}, "settings.SQJOBS['sqjobs']['broker'] = 'sqs:/': not a broker URL; use"),
        (["sqjobs"], "settings.SQJOBS: must be a dict of sections"),
    ],
)
def test_a_mistake_in_a_mapping_names_where_it_came_from(mapping: object, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(mapping, "settings.SQJOBS")  # type: ignore[arg-type]
    assert named in str(caught.value)


def test_a_settings_source_decides_what_load_settings_returns(tmp_path: Path) -> None:
    path = write(tmp_path, "[sqjobs]\nbroker = memory://\n")
    seen: list[str | None] = []

    def source(filename: str | None) -> Settings:
        seen.append(filename)
        return settings_from_mapping({"sqjobs": {"track": "all"}}, "test", load(filename) if filename else None)

    set_settings_source(source)
    try:
        assert load_settings(str(path)).get("sqjobs", "track") == "all"
        assert load_settings(str(path)).broker_url == "memory://"
    finally:
        set_settings_source(None)
    assert seen == [str(path), str(path)]
    assert load_settings(str(path)).get("sqjobs", "track") == "marked"


@pytest.mark.parametrize("url", ["sqlite:///q.db", "sqs", "sqs://", "memory://", "memory", "eager://", "eager"])
def test_every_broker_url_a_broker_answers_to_is_accepted(tmp_path: Path, url: str) -> None:
    assert load(str(write(tmp_path, f"[sqjobs]\nbroker = {url}\n"))).get("sqjobs", "broker") == url


def test_a_broker_url_given_to_configure_is_checked_there_naming_the_argument() -> None:
    from sqjobs.app import App

    with pytest.raises(ConfigError) as caught:
        App(broker="sqllite:///q.db")
    assert str(caught.value) == ("broker='sqllite:///q.db': unknown scheme 'sqllite'; "
                                 "use sqlite:///PATH, sqs, memory:// or eager://")
    app = App(default_settings(), broker="memory://")
    with pytest.raises(ConfigError, match="^broker='memry://': unknown scheme 'memry'"):
        app.configure(broker="memry://")
    assert app.broker_url == "memory://", "nothing changed"
