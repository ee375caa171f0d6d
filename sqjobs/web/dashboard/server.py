"""The dashboard's Flask application: pages, actions, and what guards them.

Guards:

- it listens on 127.0.0.1 unless told otherwise, and :func:`check_bind`
  refuses any other address without ``[dashboard] password``;
- a request whose ``Host`` is not one the dashboard answers to
  (:class:`~sqjobs.web.dashboard.binding.AllowedHosts`: DNS rebinding) is
  answered 400;
- with a password every request needs HTTP basic authentication (any user
  name, that password); wrong passwords slow their sender down
  (:mod:`sqjobs.web.dashboard.login`: 429 with ``Retry-After``);
- every action is a POST whose ``Origin`` (else ``Referer``) names an
  accepted host and which carries the session's CSRF token, refused with
  403 otherwise, and reached through a confirmation page;
- ``[dashboard] read_only = true`` shows no action and refuses every POST (403);
- pages are Jinja templates with autoescaping: job arguments, reasons and
  tracebacks are always shown as text.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any, Iterable

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, session, url_for

from ... import defaults
from ...errors import InvalidJobIdError, SQJobsError, UnknownQueueError
from ...message import check_job_id
from ..metrics import CONTENT_TYPE, scrape
from . import data
from .binding import LOCAL_HOSTS, AllowedHosts, check_bind, host_of, host_of_url
from .login import LoginThrottle

if TYPE_CHECKING:
    from ...app import App

logger = logging.getLogger("sqjobs.dashboard")

__all__ = ["LOCAL_HOSTS", "check_bind", "create_app", "serve"]

#: What each action does, for its confirmation page.
ACTIONS = {
    "requeue": "Move this dead letter back to {queue}, to run again",
    "requeue_all": "Move every dead letter of {queue} back to {queue}, to run again",
    "purge": "Delete every dead letter of {queue} for good",
}


#: Where :func:`create_app` keeps the hosts the dashboard answers to, for :func:`serve`'s first line.
HOSTS_KEY = "sqjobs_allowed_hosts"


def create_app(app: App, *, password: str = "", read_only: bool = False, host: str = defaults.DASHBOARD_HOST,
               public_hosts: Iterable[str] = ()) -> Flask:
    """The dashboard of ``app`` as a Flask application, answering to ``host`` (its address) and ``public_hosts``."""
    web = Flask(__name__)
    web.config.update(SECRET_KEY=secrets.token_bytes(32), SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_NAME="sqjobs_dashboard")
    web.jinja_env.globals.update(read_only=read_only, refresh_s=defaults.DASHBOARD_REFRESH_S, when=data.when)
    allowed = web.extensions[HOSTS_KEY] = AllowedHosts.for_bind(host, public_hosts)
    throttle = LoginThrottle()

    @web.before_request
    def check_host() -> Response | None:
        given = request.headers.get("Host", "")
        if allowed.accepts(host_of(given)):
            return None
        return Response(f"sqjobs dashboard: Host {given!r} is not a name this dashboard answers to "
                        f"({allowed.describe()}; more with [dashboard] public_hosts)\n", 400,
                        {"Content-Type": "text/plain; charset=utf-8"})

    @web.before_request
    def authenticate() -> Response | None:
        if not password:
            return None
        given = request.authorization
        if given is None or given.password is None:
            return ask_password()
        correct = hmac.compare_digest(given.password.encode(), password.encode())
        wait_s = throttle.attempt(request.remote_addr or "", correct)
        if wait_s > 0:
            return Response(f"sqjobs dashboard: too many wrong passwords from this address: try again in "
                            f"{math.ceil(wait_s)} s\n", 429, {"Retry-After": str(math.ceil(wait_s))})
        return None if correct else ask_password()

    @web.before_request
    def check_csrf() -> None:
        if request.method != "POST":
            return
        if read_only:
            abort(403, "the dashboard is read-only ([dashboard] read_only = true)")
        origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
        if not allowed.accepts(host_of_url(origin)):
            logger.warning("dashboard: refused a POST to %s from %s", request.path, origin or "no Origin or Referer")
            abort(403, "a POST must come from one of the dashboard's own pages (Origin or Referer naming "
                       f"{allowed.describe()})")
        expected = session.get("csrf_token")
        given = request.form.get("csrf_token", "")
        if not expected or not hmac.compare_digest(str(expected), given):
            logger.warning("dashboard: refused a POST to %s without a valid CSRF token", request.path)
            abort(403, "missing or wrong CSRF token: reload the page and try again")

    @web.context_processor
    def csrf() -> dict[str, Any]:
        if "csrf_token" not in session:
            session["csrf_token"] = secrets.token_urlsafe(32)
        return {"csrf_token": session["csrf_token"]}

    @web.errorhandler(SQJobsError)
    def sqjobs_error(error: SQJobsError) -> tuple[str, int]:
        status = 404 if isinstance(error, UnknownQueueError) else 503
        return render_template("error.html", title="Error", message=str(error)), status

    @web.errorhandler(403)
    def forbidden(error: Any) -> tuple[str, int]:
        return render_template("error.html", title="Refused", message=str(error.description)), 403

    @web.get("/")
    def overview() -> str:
        return render_template("overview.html", title="Queues", queues=data.queue_stats(app))

    @web.get("/queues.json")
    def queues_json() -> Response:
        return jsonify([stats.__dict__ for stats in data.queue_stats(app)])

    @web.get("/queues/<queue>/dead")
    def dead(queue: str) -> str:
        data.check_queue(app, queue)
        return render_template("dead.html", title=f"Dead letters of {queue}", queue=queue,
                               stats=app.broker.stats(queue), letters=data.dead_letters(app, queue),
                               done=request.args.get("done", ""))

    @web.get("/queues/<queue>/dead/confirm")
    def confirm(queue: str) -> str:
        data.check_queue(app, queue)
        action = request.args.get("action", "")
        if action not in ACTIONS:
            abort(404)
        return render_template("confirm.html", title="Confirm", queue=queue, action=action,
                               message_id=request.args.get("message_id", ""), job_id=request.args.get("job_id", ""),
                               question=ACTIONS[action].format(queue=queue))

    @web.post("/queues/<queue>/dead/<action>")
    def act(queue: str, action: str) -> Response:
        data.check_queue(app, queue)
        if request.form.get("confirmed") != "yes":
            abort(400)
        if action == "requeue":  # a unique job takes its key again, or stays dead: the line says which
            done = data.requeue_one(app, queue, request.form.get("message_id", ""))
        elif action == "requeue_all":
            done = data.requeue_all(app, queue)
        elif action == "purge":
            done = f"purged {data.purge_dead(app, queue)} message(s)"
        else:
            abort(404)
        logger.info("dashboard: %s on %s: %s", action, queue, done)
        return redirect(url_for("dead", queue=queue, done=done), 303)  # type: ignore[return-value]

    @web.get("/jobs")
    def search() -> Response | tuple[str, int]:
        job_id = request.args.get("id", "").strip()
        if not job_id:
            return redirect(url_for("overview"))  # type: ignore[return-value]
        try:
            check_job_id(job_id)  # no job has such an id (a '/' would not even reach its page): say the rule
        except InvalidJobIdError as exc:
            return render_template("error.html", title="No such job", message=str(exc)), 404
        return redirect(url_for("job", job_id=job_id))  # type: ignore[return-value]

    @web.get("/jobs/<job_id>")
    def job(job_id: str) -> str:
        return render_template("job.html", title=f"Job {job_id}", view=data.find_job(app, job_id))

    @web.get("/workers")
    def workers() -> str:
        return render_template("workers.html", title="Workers", workers=data.workers(app),
                               folder=data.health_dir(app))

    @web.get("/periodic")
    def periodic() -> str:
        views, problem = data.periodic(app)
        return render_template("periodic.html", title="Periodic jobs", jobs=views, problem=problem)

    @web.get("/metrics")
    def metrics() -> Response:
        return Response(scrape(app), 200, {"Content-Type": CONTENT_TYPE})

    return web


def ask_password() -> Response:
    """401 with the challenge that makes a browser ask for the password."""
    return Response("sqjobs dashboard: a password is needed\n", 401,
                    {"WWW-Authenticate": 'Basic realm="sqjobs dashboard", charset="UTF-8"'})


def serve(web: Flask, host: str, port: int) -> None:
    """Serve ``web`` on ``host:port`` (threads, one per request) until interrupted."""
    from werkzeug.serving import make_server

    server = make_server(host, port, web, threaded=True)
    logger.info("dashboard on http://%s:%d/", host, server.server_port)
    logger.info("dashboard: answers to Host %s; any other is refused (400)", web.extensions[HOSTS_KEY].describe())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
