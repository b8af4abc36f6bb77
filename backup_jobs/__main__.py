"""``python -m backup_jobs`` runs the CLI."""

from backup_jobs.cli.main import main

main()
