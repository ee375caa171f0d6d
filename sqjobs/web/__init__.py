"""What sqjobs serves over HTTP: the dashboard and the Prometheus scrape. It imports the rest of
sqjobs; nothing in sqjobs imports it."""

from __future__ import annotations
