"""A real SQS endpoint for the tests: moto's server on 127.0.0.1, one per test session.

The server runs as its own process (``python -m moto.server``) so that its
long polls never compete with the test process for the GIL, and so that a
test can never touch its state except over HTTP, as a real client would.
Every test gets its own ``queue_prefix``; queues are never shared between tests.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

#: Region and fake credentials every SQS test uses (moto accepts any key unless auth is switched on).
REGION = "us-east-1"
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
#: How long the server may take to answer its first request.
START_TIMEOUT_S = 30.0

_prefixes = itertools.count()


@dataclass
class MotoServer:
    """A running moto server: ``endpoint_url`` is what boto3 and the config file are given."""

    process: subprocess.Popen
    endpoint_url: str
    log_path: Path

    def broker_options(self, queue_prefix: str) -> dict[str, Any]:
        """Keyword arguments for SQSBroker that point at this server with fake credentials."""
        return {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": REGION,
                "endpoint_url": self.endpoint_url, "queue_prefix": queue_prefix}

    def sqs_section(self, queue_prefix: str, **values: object) -> dict[str, object]:
        """The ``[sqs]`` section of a config file that points at this server."""
        section: dict[str, object] = {"region": REGION, "endpoint_url": self.endpoint_url,
                                      "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                      "queue_prefix": queue_prefix}
        section.update(values)
        return section

    def stop(self) -> None:
        """Stop the server process and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto_server(log_dir: Path, env: Mapping[str, str] | None = None, port: int | None = None) -> MotoServer:
    """Start ``python -m moto.server`` on a free loopback port (or ``port``); return once it answers HTTP.

    ``env`` adds environment variables (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT`` to switch
    on moto's credential checks). Raises RuntimeError if it does not come up.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    for _attempt in range(3):
        chosen = port or free_port()
        log_path = log_dir / f"moto-{chosen}-{time.monotonic_ns()}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(chosen)],
                                       stdout=log, stderr=subprocess.STDOUT, env=full_env)
        server = MotoServer(process, f"http://127.0.0.1:{chosen}", log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=1).close()
                return server
            except urllib.error.HTTPError:
                return server
            except OSError:
                time.sleep(0.05)
        server.stop()
    raise RuntimeError(f"moto server did not start; see {log_path}: {log_path.read_text()[-2000:]}")


def unique_prefix(name: str = "t") -> str:
    """Return a queue name prefix no other test of this session uses."""
    return f"{name}{os.getpid()}-{next(_prefixes)}-"


@pytest.fixture(scope="session")
def sqs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto SQS server for the whole test session (per xdist worker), stopped at the end."""
    server = start_moto_server(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqs_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, dict[str, str]]]:
    """A second moto server that checks credentials, and the key of an IAM user with no SQS permission."""
    import boto3

    server = start_moto_server(tmp_path_factory.mktemp("moto-auth"), {"INITIAL_NO_AUTH_ACTION_COUNT": "2"})
    try:
        iam = boto3.client("iam", region_name=REGION, endpoint_url=server.endpoint_url,
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="nobody")  # the two actions moto lets through before it checks
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield server, {"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}
    finally:
        server.stop()


@pytest.fixture
def sqs_prefix() -> str:
    """A queue prefix of this test's own."""
    return unique_prefix()
