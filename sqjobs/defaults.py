"""Every default of sqjobs in one place, each with the reason it has that value."""

from __future__ import annotations

#: Queue a job goes to when neither the job nor the call names one.
QUEUE = "default"

#: Suffix of the dead-letter queue that goes with every queue (FIFO: before ``.fifo``).
DEAD_SUFFIX = "-dead"

#: Embedded broker and status database when no configuration exists: files in
#: the current directory, so a first run needs nothing installed or running.
BROKER_URL = "sqlite:///sqjobs-queue.db"
DATABASE_URL = "sqlite:///sqjobs.db"

#: Largest message body: what SQS accepts, so a job that works on the embedded
#: broker keeps working on SQS.
MAX_MESSAGE_BYTES = 256 * 1024

#: Longest delay SQS holds itself (DelaySeconds caps at 15 minutes): the default of
#: ``[sqs] max_delay_s``. A longer delay on SQS is held in the ``[sqjobs] database``
#: and sent by a beater when it is due (:mod:`sqjobs.schedule.later`).
MAX_DELAY_S = 15 * 60

#: Longest delay (or ETA ahead) any job accepts: a year. The embedded and memory
#: brokers hold it themselves; SQS hands what is over ``[sqs] max_delay_s`` to the
#: database. A bound exists so that a delay in milliseconds passed as seconds is
#: an error at once, not a job that runs in thirty years.
MAX_LATER_S = 366 * 24 * 60 * 60

#: How long ``sqjobs worker --burst`` keeps waiting, once its queues are empty, for delayed
#: messages due within it (a retry's backoff, a short delay): a burst run then ends with the
#: jobs it started done, retries included, while a job due later is left and counted in its
#: last line. A few seconds: longer, and a burst run in CI waits for what it should not.
BURST_WAIT_S = 5.0

#: How long a beater's claim on a held job may stay unsent before another beater
#: takes it over (its beater died between claiming and sending): a minute, like
#: periodic ticks.
HELD_CLAIM_TIMEOUT_S = 60.0

#: Held jobs one beater tick sends at most (the rest wait for the next tick, a
#: second later), so that one tick's transaction stays short.
HELD_BATCH = 100

#: Longest visibility timeout SQS allows (12 hours).
MAX_VISIBILITY_TIMEOUT_S = 12 * 60 * 60

#: Messages per batch call: the SQS limit for send, delete and visibility batches.
MAX_BATCH = 10

#: Longest long poll SQS allows.
MAX_WAIT_S = 20

#: How long a received message stays hidden before it is delivered again when
#: its worker dies. The worker's heartbeat extends it while a job runs, so it
#: only bounds how long a crash delays a job.
VISIBILITY_TIMEOUT_S = 60.0

#: How many messages a worker receives at once. Ten is one SQS request for ten
#: jobs; long jobs want 1 so that other workers can take the rest.
PREFETCH = 10

#: Extra attempts after the first failure, unless a job says otherwise.
RETRIES = 0

#: First backoff delay in seconds; doubled at each attempt.
RETRY_DELAY_S = 10.0

#: Longest backoff delay, so a job retried many times still runs within the hour.
MAX_RETRY_DELAY_S = 3600.0

#: Share of the backoff added at random, so failures do not return in lockstep.
RETRY_JITTER = 0.1

#: How long an idle embedded-broker worker waits in one receive call. Short, so
#: SIGTERM is answered within a second or two.
SQLITE_WAIT_S = 1.0

#: How often a waiting embedded-broker receive checks whether another
#: process wrote to the file (``PRAGMA data_version``: a cheap read, no lock):
#: an idle worker picks up a new message within a few milliseconds.
SQLITE_CHANGE_POLL_S = 0.004

#: How soon a worker that runs jobs and has room for more asks the broker
#: again after a receive that found nothing (an idle worker waits in a long
#: poll instead). On SQS each ask is a paid request: once a second there.
BUSY_POLL_S = 0.05
SQS_BUSY_POLL_S = 1.0

#: A worker that receives a job name it does not know hands the message back
#: for another worker (a rolling deploy: only the new code knows the job),
#: visible again after this many seconds...
UNKNOWN_JOB_RETRY_DELAY_S = 15.0

#: ...and moves it to the dead-letter queue once it was received this many
#: times: 20 refusals at least 15 s apart give every worker five minutes to
#: be replaced by one that knows the job.
UNKNOWN_JOB_REFUSALS = 20

#: How old a fire time may be when a beater first sees it and still be sent as
#: on time; an older one was missed (no beater ran, the database was down) and
#: follows the job's ``catch_up``. A minute covers a beater restart or a slow
#: database without treating the run as missed.
CATCH_UP_GRACE_S = 60.0

#: Smallest grace ``[beater] catch_up_grace_s`` accepts: a beater ticks once a
#: second and a tick may wait on the database, so a smaller grace would count
#: fire times sent on time as missed (and ``catch_up = "none"`` would skip them).
MIN_CATCH_UP_GRACE_S = 5.0

#: The crash ceiling: a message received more times than its job's attempts
#: (``retries + 1``) plus this allowance is dead-lettered before it runs. Its
#: workers died while running it (a crash, a kill, out of memory) and it would
#: take the next one down too. The allowance covers deaths that were not the
#: job's fault (a worker killed in a deploy) and, on SQS, messages handed back
#: unstarted at a stop, which SQS counts as received.
CRASH_ALLOWANCE = 2

#: How long after a job's ``timeout`` an attempt that did not end by itself
#: (it is interrupted at the timeout, and again every second) is settled as
#: timed out from outside: a thread blocked in ``time.sleep`` or C code cannot
#: be interrupted. With threads the job process's monitor settles it and
#: leaves the thread; with one job at a time the worker kills the job process.
TIMEOUT_GRACE_S = 2.0

#: With threads, how much longer than TIMEOUT_GRACE_S the worker leaves the job
#: process's monitor before it kills the job process itself: C code holding
#: the GIL stops the monitor too. Longer than the monitor's look interval.
TIMEOUT_MONITOR_SLACK_S = 0.5

#: How long a new job process may take to say it is ready.
JOB_PROCESS_START_S = 30.0

#: Where a worker runs jobs: "process", a job process it forks and supervises,
#: so that a job that crashes, hangs in C code or holds the GIL cannot take the
#: worker (its heartbeat, the other messages it holds) with it; or "none", in
#: the worker itself (for pdb and for tests that step the worker).
ISOLATION = "process"

#: A message whose move to the dead-letter queue failed (the broker refused the
#: copy, or could not be reached) stays in its queue, hidden this long before
#: the worker tries to move it again; it is never run again.
DEAD_LETTER_RETRY_S = 60.0
#: First pause after a failed status-database write in a worker (or beater); doubled at each
#: failure up to the cap.
STORE_RETRY_PAUSE_S = 1.0
STORE_RETRY_PAUSE_MAX_S = 30.0

#: Longest arguments text a status row keeps, in characters: the JSON of
#: ``{"args": [...], "kwargs": {...}}``, longer ones cut and marked (see
#: :data:`sqjobs.status.store.ARGUMENTS_CUT_MARK`). Enough for a person to read and
#: search; the message carries the whole (up to 256 KiB), and a row is written
#: at every ``.delay()`` of a tracked job and read whole by every ``wait()``.
STATUS_ARGUMENTS_MAX_CHARS = 4000

# -- the SQS client (SQS's own hard limits are in sqjobs.brokers.sqs_limits) ----------------

#: Attempts per SQS request (first one included) before a connection error or
#: throttling is raised: botocore's standard retry mode backs off between them.
SQS_MAX_ATTEMPTS = 5
#: Seconds to open a connection to SQS; reads wait the long poll plus SQS_READ_MARGIN_S.
SQS_CONNECT_TIMEOUT_S = 5.0
SQS_READ_MARGIN_S = 10.0
#: How often a long poll's caller looks whether it was interrupted (SIGTERM is answered this fast).
SQS_INTERRUPT_CHECK_S = 0.05
#: Message group of FIFO messages sent without one.
SQS_DEFAULT_GROUP = "sqjobs"
#: Attempts at the entries of a batch that SQS failed on its side (not the sender's fault).
SQS_BATCH_ENTRY_ATTEMPTS = 3

# -- signed messages ------------------------------------------------------------------------

#: Shortest signing key accepted, in bytes: HMAC-SHA256's own block of
#: security; a shorter secret is easier to guess than the hash is to break.
MIN_SIGNING_KEY_BYTES = 32

#: Characters of a key id: the start of the key's SHA-256 in hex. Enough to
#: tell a few keys apart in a rotation, and it says nothing about the key.
SIGNING_KEY_ID_CHARS = 8

# -- metrics and the dashboard ----------------------------------------------------------------

#: Where the dashboard and the metrics server listen unless told otherwise: this machine only,
#: since the dashboard can requeue and purge; any other address needs ``[dashboard] password``.
DASHBOARD_HOST = "127.0.0.1"
#: The dashboard's port (``sqjobs dashboard --port``); Flower's 5555 and rq-dashboard's 9181 stay free.
DASHBOARD_PORT = 8181
#: The metrics server's port (``sqjobs metrics --port``): in the range Prometheus exporters use.
METRICS_PORT = 9186
#: Folder under the daemon's run_dir where its workers and beaters record metrics when
#: ``[metrics] dir`` names none.
METRICS_SUBDIR = "metrics"
#: Seconds a scrape waits for the metrics folder's lock (held by a merge of the files of stopped
#: processes, a few milliseconds) before it leaves the recorded series out of its answer.
METRICS_LOCK_WAIT_S = 5.0
#: Upper bounds of the job-duration histogram buckets, in seconds: from a quick job to a long one.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
#: Seconds between two refreshes of an open dashboard page.
DASHBOARD_REFRESH_S = 5
#: Characters of a dead letter's arguments the dashboard shows before it cuts them.
DASHBOARD_ARGS_CHARS = 200
#: Characters of a job id the Django admin's list shows (the whole id is in its tooltip and on the job's
#: page): enough to tell jobs apart, short enough that the list fits a 1280-pixel screen.
ADMIN_LIST_ID_CHARS = 12
#: Characters of a job or queue name that list shows, the middle cut out (a name's end tells most).
ADMIN_LIST_NAME_CHARS = 40
#: Dead letters one dashboard page lists.
DASHBOARD_DEAD_LIMIT = 100
#: Wrong dashboard passwords one client address may give before it must wait: room for a
#: person's typos, too few to matter to a guesser.
DASHBOARD_LOGIN_FREE_FAILURES = 5
#: Seconds such an address then waits after its last wrong password before the next is looked
#: at, doubled at each further wrong one...
DASHBOARD_LOGIN_DELAY_S = 1.0
#: ...up to this: a guesser gets a try a minute instead of a thousand a second, and a person
#: who finally remembers the password waits a minute at worst.
DASHBOARD_LOGIN_MAX_DELAY_S = 60.0
#: Seconds without a wrong password after which an address starts from zero again (its next
#: burst of wrong passwords is logged again).
DASHBOARD_LOGIN_FORGET_S = 15 * 60.0
#: Addresses whose wrong passwords the dashboard remembers at most (the oldest go first), so
#: that guesses from many addresses cannot fill its memory.
DASHBOARD_LOGIN_CLIENTS = 10_000

#: Seconds a worker process stays up at the least when it leaves on its own after ``max_jobs``: supervisord
#: (under sqjobsd, whose ``startsecs`` is this value) counts a process that exits sooner as a failed start
#: and gives up after a few (FATAL), though a worker that ran its jobs quickly did nothing wrong.
WORKER_MIN_LIFETIME_S = 1.0
