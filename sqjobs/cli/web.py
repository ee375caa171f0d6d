"""``sqjobs metrics`` and ``sqjobs dashboard``: serve /metrics, or the web dashboard (which serves /metrics too)."""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click

from .. import defaults
from ..app import App, current_app
from ..errors import ConfigError
from ..web.dashboard import check_bind
from ..web.metrics import CONTENT_TYPE, scrape
from .common import config_option, configure_app

logger = logging.getLogger("sqjobs.cli")


def metrics_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering ``GET /metrics`` with a scrape of ``app`` (not started)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served here")
                return
            try:
                body = scrape(app)
            except Exception as exc:  # a scrape that fails says why, and the server stays up
                logger.exception("metrics: scrape failed")
                self.send_error(500, f"scrape failed: {type(exc).__name__}")
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            logger.debug("metrics: " + format, *args)

    return ThreadingHTTPServer((host, port), Handler)


@click.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (default: [metrics] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help=f"Port (default: [metrics] port, else {defaults.METRICS_PORT}).")
def metrics(config: str | None, host: str | None, port: int | None) -> None:
    """Serve Prometheus metrics at /metrics: what workers recorded, queue depths, next fire times."""
    settings = configure_app(config)
    host = host or str(settings.get("metrics", "host"))
    port = port if port is not None else (settings.get("metrics", "port") or defaults.METRICS_PORT)
    server = metrics_server(current_app(), host, int(port))
    click.echo(f"metrics on http://{host}:{server.server_address[1]}/metrics", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (default: [dashboard] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help=f"Port (default: [dashboard] port, else {defaults.DASHBOARD_PORT}).")
@click.option("--public-host", "public_hosts", multiple=True, metavar="NAME",
              help="A host name people reach the dashboard by, besides the address it listens on "
                   "(repeatable; default: [dashboard] public_hosts). Requests naming any other are refused.")
def dashboard(config: str | None, host: str | None, port: int | None, public_hosts: tuple[str, ...]) -> None:
    """Serve the web dashboard: queues, dead letters, jobs by id, workers, periodic jobs, /metrics."""
    settings = configure_app(config)
    host = host or str(settings.get("dashboard", "host"))
    public_hosts = public_hosts or tuple(settings.get("dashboard", "public_hosts"))
    port = port if port is not None else (settings.get("dashboard", "port") or defaults.DASHBOARD_PORT)
    password = str(settings.get("dashboard", "password"))
    where = f"{settings.source}: [dashboard]" if settings.source else "[dashboard]"
    check_bind(host, password, where)
    try:
        from ..web.dashboard.server import create_app, serve
    except ImportError as exc:
        raise ConfigError(f"the dashboard needs Flask: pip install 'sqjobs[dashboard]' ({exc})") from None
    web = create_app(current_app(), password=password, read_only=bool(settings.get("dashboard", "read_only")),
                     host=host, public_hosts=public_hosts)
    click.echo(f"dashboard on http://{host}:{port}/", err=True)
    serve(web, host, int(port))
