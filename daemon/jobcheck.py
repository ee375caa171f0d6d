"""Import the job modules the way a worker will, in a child process, before sqjobsd starts anything.

A worker that cannot import a ``[sqjobs] jobs`` module exits at once;
supervisord restarts it until it gives up (FATAL), and the reason sits in
the worker's log. ``sqjobsd start``, ``restart`` and ``reload`` therefore
import the modules first and refuse, with the module, the config file and
the exception on one line, before anything is started or changed. A
configuration whose modules register no job at all is refused the same way:
its workers would exit at once (``sqjobs worker`` refuses to start without
jobs).

The import runs in a child process (``python -m sqjobsd.jobcheck CONFIG``)
started like a worker: the same interpreter, the config file's directory as
the working directory (first on ``sys.path``, as for ``python -m sqjobs``),
``[sqjobs] path`` prepended by the same code the worker uses. A module with
side effects at import, one that calls ``sys.exit`` or one that hangs cannot
wedge ``sqjobsd``: the child gets :data:`IMPORT_TIMEOUT_S` and is killed with
its process group after that. The child also reports the longest job
``timeout``, from which the default stop and stall timeouts are derived.

The child writes JSON lines to its original stdout (``{"importing": M}``
before each module, then ``{"ok": true, "longest_timeout_s": ...}`` or
``{"module": M, "error": ..., "traceback": ...}``); whatever the modules
print goes to its stderr, which sqjobsd logs at debug level (``-v``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from typing import Any

from sqjobs.config import Settings
from sqjobs.errors import DaemonError

logger = logging.getLogger("sqjobs.daemon")

#: Longest time the job modules may take to import before sqjobsd gives up on them.
IMPORT_TIMEOUT_S = 60.0
#: How long to collect the child's output once it was killed.
KILLED_OUTPUT_S = 5.0


class JobImportError(DaemonError):
    """A ``[sqjobs] jobs`` module cannot be imported (or does not finish importing)."""


def longest_job_timeout(settings: Settings, consequence: str = "nothing was started",
                        timeout_s: float = IMPORT_TIMEOUT_S) -> float | None:
    """Import the job modules in a child process; return the longest job ``timeout`` (None: no job has one).

    Raises JobImportError, whose message names the config file, the module
    and the exception, and ends with ``consequence``. The traceback and what
    the modules printed are logged at debug level.
    """
    command = [sys.executable, "-m", "sqjobsd.jobcheck", str(settings.source)]
    process = subprocess.Popen(command, cwd=settings.base_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process.pid)
        try:
            stdout, stderr = process.communicate(timeout=KILLED_OUTPUT_S)
        except subprocess.TimeoutExpired:  # a grandchild in a session of its own holds the pipes
            process.kill()
            stdout, stderr = "", ""
    reports = _parse(stdout)
    if stderr.strip():
        logger.debug("output of the job modules while importing them:\n%s", stderr.rstrip())
    where = f"{settings.source}: [sqjobs] jobs"
    last = reports[-1] if reports else {}
    if timed_out:
        module = last.get("importing", "?")
        raise JobImportError(f"{where}: importing {module!r} did not finish within {timeout_s:g} s; {consequence}")
    if last.get("ok") is True:
        if last.get("jobs") == 0:
            modules = ", ".join(settings.job_modules)
            why = f"the job modules {modules} define no job" if modules else "[sqjobs] jobs names no module"
            raise JobImportError(f"{where}: no job is registered ({why}), so every worker would refuse to start: "
                                 f"list your job modules in [sqjobs] jobs; {consequence}")
        value = last.get("longest_timeout_s")
        return float(value) if isinstance(value, (int, float)) else None
    if "error" in last:
        logger.debug("importing %r failed:\n%s", last.get("module"), str(last.get("traceback", "")).rstrip())
        raise JobImportError(f"{where}: cannot import {last.get('module')!r}: {last['error']}; {consequence}")
    module = last.get("importing")
    detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {process.returncode}"
    subject = f"importing {module!r}" if module else "the import check"
    raise JobImportError(f"{where}: {subject} ended the process ({detail}); {consequence}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _parse(stdout: str) -> list[dict[str, Any]]:
    reports = []
    for line in stdout.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            reports.append(value)
    return reports


def _report(channel: Any, **values: Any) -> None:
    channel.write(json.dumps(values) + "\n")
    channel.flush()


def _child(config: str) -> int:
    """The child process: import the modules like a worker, report on the original stdout; return 0."""
    import importlib
    import traceback

    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # what the modules print must not mix with the reports
    sys.stdout = sys.stderr
    from sqjobs.app import configure
    from sqjobs.job import registry

    settings = configure(config)
    for module in settings.job_modules:
        _report(channel, importing=module)
        try:
            importlib.import_module(module)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: any way the import can fail
            _report(channel, module=module, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            return 0
    timeouts = [timeout for timeout in (registry.get(name).timeout for name in registry.names()) if timeout]
    _report(channel, ok=True, jobs=len(registry.names()), longest_timeout_s=max(timeouts) if timeouts else None)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
