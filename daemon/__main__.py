"""``python -m sqjobsd`` runs the ``sqjobsd`` command (supervisord starts the watchdog this way)."""

from .cli import main

main()
