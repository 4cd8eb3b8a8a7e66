"""User-facing errors: one readable message, a non-zero exit, no traceback.

This module imports nothing from darts, so every other module can raise a DartsError without an
import cycle; the command-line policy that turns it into an exit status lives in darts.cli.
"""
from __future__ import annotations


class DartsError(Exception):
    """A problem with the user's input (config, genotype, dataset, checkpoint).

    Raised anywhere in the library; the command-line entry points (darts.cli) turn it into
    a single ``error: ...`` line and exit status 2.
    """


def choices_message(kind: str, name: object, valid) -> str:
    """'unknown op 'foo'; valid choices: a, b, c'."""
    return f"unknown {kind} {name!r}; valid choices: {', '.join(sorted(map(str, valid)))}"
