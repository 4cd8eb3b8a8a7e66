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


def exit_on_user_error(fn):
    """Decorate a CLI task so a :class:`DartsError` prints one line and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DartsError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
