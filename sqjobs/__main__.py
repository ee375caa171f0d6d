"""``python -m sqjobs`` runs the ``sqjobs`` command."""

from .cli import main

main()
