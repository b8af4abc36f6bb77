"""The ``backup-jobs`` command line: ``backup-jobs NOUN VERB``, thin over the client."""
