"""Put on PYTHONPATH by tests/support/chaos.py for the processes it starts: sends the
``castbook.jobs`` logger (its ``task … ended …`` lines) to stderr, which is the process's log
file, at INFO, so the fault suite can count how often each task's ending was recorded.
``castbook serve`` leaves the root logger to uvicorn, which prints only its own loggers."""

import logging
import sys

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("[%(asctime)s %(process)d %(name)s] %(message)s"))
_jobs = logging.getLogger("castbook.jobs")
_jobs.addHandler(_handler)
_jobs.setLevel(logging.INFO)
_jobs.propagate = False
