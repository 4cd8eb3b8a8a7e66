"""Stop cleanly when a scheduler asks: SIGTERM (preemption, ``scancel``, torchrun shutting down),
SIGUSR2 (what submitit has SLURM send ``signal_delay_s`` before the time limit) or SIGUSR1 (the
usual choice of hand-written ``sbatch --signal`` scripts).

The handler only records the request; the loop finishes its current step, writes a checkpoint
at that step and raises :class:`Preempted`. A handler that was installed before ours (submitit's,
which requeues the job) is then called, so a requeued job reruns the same command in the same run
directory and ``resume=auto`` continues from the checkpoint.
"""
from __future__ import annotations

import signal
from types import FrameType

from darts.checkpoint import save_atomic
from darts.errors import DartsError

# The exit status of a run stopped by a signal: 128 + SIGTERM, what a shell reports for a killed job.
PREEMPTED_EXIT_CODE = 143


class Preempted(Exception):
    """The run stopped at a signal after saving a checkpoint."""

    def __init__(self, message: str, chained_handlers: list):
        super().__init__(message)
        self.chained_handlers = chained_handlers


class StopSignals:
    """A context manager that records ``signals`` while the loop runs and restores the old handlers.

    ``requested`` holds the name of the first signal received (None before any).
    """

    def __init__(self, names=("SIGTERM", "SIGUSR1", "SIGUSR2")):
        self.signals = []
        for name in names:
            number = getattr(signal, str(name), None)
            if not isinstance(number, signal.Signals):
                valid = ", ".join(s.name for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT))
                raise DartsError(f"unknown signal {name!r} in preemption.signals; valid choices include: {valid}")
            self.signals.append(number)
        self.requested: str | None = None
        self.previous: dict[signal.Signals, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        self.previous = {}
        try:
            for number in self.signals:
                self.previous[number] = signal.signal(number, self._handle)
        except ValueError:   # not the main thread (a launcher running jobs in threads): leave signals alone
            self.__exit__(None, None, None)
        return self

    def __exit__(self, *exc) -> None:
        # ``previous`` stays readable: chained_handlers() is asked after the loop has left the block.
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def chained_handlers(self) -> list:
        """The (handler, signum) pairs to run after the checkpoint: another library's handler for the
        signal received (submitit's requeue); default and ignore dispositions are not callable."""
        if self.requested is None:
            return []
        number = signal.Signals[self.requested]
        handler = self.previous.get(number)
        return [(handler, int(number))] if callable(handler) else []


def finish_preempted(error: Preempted) -> None:
    """After the checkpoint: hand the signal to the handler it displaced (submitit requeues and
    exits there), else exit with 143 so a scheduler sees an unfinished job."""
    import sys

    print(f"stopped: {error}", file=sys.stderr, flush=True)
    for handler, signum in error.chained_handlers:
        handler(signum, None)
    sys.exit(PREEMPTED_EXIT_CODE)


class StopCheck:
    """When the loop should stop for a signal. A single process looks at its own flag after every
    step (a Python bool: no device sync). Under DDP the ranks must stop at the same step, so they
    agree by an all-reduce every ``preemption.sync_every`` steps and at every epoch's end."""

    def __init__(self, cfg, dist, device):
        default = ["SIGTERM", "SIGUSR1", "SIGUSR2"]
        names = list(cfg.get("signals", default)) if cfg is not None else default
        self.signals = StopSignals(names)
        self.sync_every = int(cfg.get("sync_every", 10)) if cfg is not None else 10
        if self.sync_every < 1:
            raise DartsError(f"preemption.sync_every must be a positive integer, got {self.sync_every}")
        self.dist = dist
        self.device = device

    @property
    def signal_name(self) -> str:
        return self.signals.requested or "a stop signal on another rank"

    def requested(self, step: int) -> bool:
        """After step ``step`` (0-based) of an epoch: stop now?"""
        if not self.dist.enabled:
            return self.signals.requested is not None
        if (step + 1) % self.sync_every:
            return False
        return self.dist.any(self.signals.requested is not None, self.device)

    def requested_at_epoch_end(self) -> bool:
        return self.dist.any(self.signals.requested is not None, self.device)


class StoppableRun:
    """The stop of a run (search or final training) that has ``context`` (a ``RunContext``),
    ``checkpoint_path`` and ``state(last_finished_epoch, interrupted)``."""

    def stop(self, epoch: int, next_step: int, totals, stop_check: StopCheck) -> None:
        """Checkpoint at a stop signal and raise :class:`Preempted`. Mid-epoch (``next_step`` > 0) the
        checkpoint records the epoch, the next step and the epoch's metric sums so far; at an epoch's
        end the epoch's own checkpoint, just written, is the one to resume from."""
        if next_step and self.context.writes:
            interrupted = {"epoch": epoch, "step": next_step, "totals": totals.sums}
            save_atomic(self.state(epoch - 1, interrupted), self.checkpoint_path)
        raise Preempted(f"{stop_check.signal_name} at epoch {epoch} step {next_step}: checkpoint saved in "
                        f"{self.checkpoint_path}; rerun with resume=true (or auto) to continue",
                        stop_check.signals.chained_handlers())
