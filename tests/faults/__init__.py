"""The fault suite (``pytest -m faults``): each fault injected for real on real processes.

Every test counts the runs of jobs that record each run durably (a line
appended with O_APPEND, see :func:`tests.jobs_for_tests.record`), so "none
lost" and "at most N twice" are exact counts, not impressions.
"""
