"""How the command-line entry points end: a user error is one line and exit status 2, a run
stopped by a signal hands over to the scheduler's handler or exits 143."""
from __future__ import annotations

import functools
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from darts.errors import DartsError
from darts.preemption import Preempted, finish_preempted

# What a CLI task exits with for a DartsError; distinct from 1 (a bug's traceback) and 143 (a stop).
USER_ERROR_EXIT_CODE = 2


def multirun_job_dir() -> str | None:
    """The job's output directory when running inside a Hydra multirun, else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get().runtime.output_dir


def exit_on_user_error(fn):
    """Decorate a CLI task so a :class:`DartsError` prints one line and exits 2, and a run stopped
    by a signal (after its checkpoint) hands over to the scheduler's handler or exits 143.

    Inside a multirun, exiting would end the whole sweep: the job instead writes
    its message to ``error.txt`` in its directory and re-raises, so Hydra marks
    that job failed, runs the others, and exits non-zero at the end.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Preempted as stop:
            finish_preempted(stop)
        except DartsError as err:
            print(f"error: {err}", file=sys.stderr)
            job_dir = multirun_job_dir()
            if job_dir is None:
                sys.exit(USER_ERROR_EXIT_CODE)
            with open(f"{job_dir}/error.txt", "w") as handle:
                handle.write(f"{err}\n")
            raise

    return wrapper
