"""The pieces of ``bench/peers.py``: sqjobs beside its peers on the same jobs, in one run.

Layout:

- :mod:`peerbench.settings` -- the cases, their job counts, and the names
  the worker processes read from their environment;
- :mod:`peerbench.counter` -- a tiny Redis client (INCR, GET, RPUSH, BLPOP),
  so that every system's job body does the same Redis work and sqjobs' side
  needs no extra package;
- :mod:`peerbench.bodies` -- the job bodies every peer wraps in its own
  decorator (``peerbench.jobs.<peer>_jobs``);
- :mod:`peerbench.processes` -- worker groups started with each system's own
  command line in their own process group, always killed afterwards;
- :mod:`peerbench.measure` -- drain, pickup, enqueue and eager measurements;
- :mod:`peerbench.machine` and :mod:`peerbench.report` -- what the run ran on,
  and the table;
- one module per system (``sqjobs_peer``, ``raw_peer``, ``dramatiq_peer``,
  ``huey_peer``, ``celery_peer``, ``rq_peer``), each a small class saying how
  to start that system's workers and how to send it jobs;
- :mod:`peerbench.producer` -- the child process that sends jobs for one
  system (so that the runner never imports the peers' libraries).
"""
