"""User-facing errors: one readable message, a non-zero exit, no traceback."""
from __future__ import annotations

import functools
import sys


class DartsError(Exception):
    """A problem with the user's input (config, genotype, dataset, checkpoint).

    Raised anywhere in the library; the command-line entry points turn it into
    a single ``error: ...`` line and exit status 2.
    """


def choices_message(kind: str, name: object, valid) -> str:
    """'unknown op 'foo'; valid choices: a, b, c'."""
    return f"unknown {kind} {name!r}; valid choices: {', '.join(sorted(map(str, valid)))}"


def _multirun_job_dir():
    """The job's output directory when running inside a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
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
        from darts.preemption import Preempted, finish_preempted

        try:
            return fn(*args, **kwargs)
        except Preempted as stop:
            finish_preempted(stop)
        except DartsError as err:
            print(f"error: {err}", file=sys.stderr)
            job_dir = _multirun_job_dir()
            if job_dir is None:
                sys.exit(2)
            with open(f"{job_dir}/error.txt", "w") as handle:
                handle.write(f"{err}\n")
            raise

    return wrapper
