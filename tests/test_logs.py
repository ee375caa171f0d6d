"""The per-job log line: straight to sqjobs' own handler, or through logging when the application set up its own."""

from __future__ import annotations

import re
import subprocess
import sys

SCRIPT = """
import logging, sys
from sqjobs import logs
logs.setup()
runner = logging.getLogger("sqjobs.runner")
logs.info_line(runner, "job abc record on default: attempt 1 succeeded in 0.001 s")  # straight to the handler
runner.info("%s", "job abc record on default: attempt 1 succeeded in 0.001 s")  # the usual way
token = logs.current_job.set("j42")
logs.info_line(runner, "inside")
logs.current_job.reset(token)
seen = []
class Keep(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
logging.getLogger("sqjobs").addHandler(Keep())  # an application's handler: the line goes through logging
logs.info_line(runner, "to both")
logging.getLogger().setLevel(logging.WARNING)
logs.info_line(runner, "below the level")
print(seen)
"""

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (.*)")


def test_the_direct_line_is_the_line_logging_writes_and_gives_way_to_an_applications_handler() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    bodies = [match.group(1) for line in lines if (match := LINE.fullmatch(line))]
    assert len(bodies) == len(lines) == 4, lines
    direct, usual, inside, both = bodies
    assert direct == usual, "the same text either way"
    assert re.fullmatch(r"INFO sqjobs\.runner\[\d+\]: job abc record on default: attempt 1 succeeded in 0\.001 s",
                        direct)
    assert re.fullmatch(r"INFO sqjobs\.runner\[\d+\] job j42: inside", inside)
    assert both.endswith(": to both")
    assert result.stdout.strip() == "['to both']", "the application's handler got it; the level held back the last"


def test_logging_own_format_and_sqjobs_formatter_write_the_same_line() -> None:
    """LOG_FORMAT as ``logging`` fills it in and :class:`logs.Formatter` give one text, with and without a job."""
    import logging

    from sqjobs import logs

    ours, plain = logs.Formatter(), logging.Formatter(logs.LOG_FORMAT)
    for job_id in (None, "j42"):
        record = logging.LogRecord("app.mail", logging.WARNING, __file__, 1, "sent to %s", (42,), None)
        token = logs.current_job.set(job_id)
        try:
            line = ours.format(record)  # sets record.sqjobs_job, which LOG_FORMAT names
        finally:
            logs.current_job.reset(token)
        assert line == plain.format(record)
        assert line.endswith(f" WARNING app.mail[{record.process}]{' job j42' if job_id else ''}: sent to 42"), line
