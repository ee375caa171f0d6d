"""``python -m sqjobs`` runs the ``sqjobs`` command."""

from .cli.commands import main

main()
