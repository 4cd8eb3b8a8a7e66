"""The one registry type: ops, search spaces, strategies, datasets and genotype formats are all chosen by
name from a :class:`Registry`, and an unknown name gets one line that lists the valid choices.

A plug-in is registered where it is defined::

    STRATEGIES = Registry("strategy")

    @STRATEGIES.register("darts")
    class DARTS(...): ...

and the Hydra config group that selects it names it (``name: darts``), so adding one touches no loop.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Generic, Iterator, TypeVar

from darts.errors import DartsError, choices_message

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> entry map with readable errors.

    ``kind`` names what it holds ("op", "search space", ...) in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` and return it unchanged."""

        def decorator(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorator

    def add(self, name: str, entry: T) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    @contextlib.contextmanager
    def temporarily(self, name: str, entry: T) -> Iterator[T]:
        """Register ``entry`` for the duration of a ``with`` block (tests, notebooks)."""
        self.add(name, entry)
        try:
            yield entry
        finally:
            self.remove(name)

    def get(self, name: str) -> T:
        """The entry named ``name``; DartsError listing the valid choices if there is none."""
        if name not in self._entries:
            raise DartsError(choices_message(self.kind, name, self._entries))
        return self._entries[name]

    def check(self, names, allowed=None) -> None:
        """DartsError for the first of ``names`` that is not registered (or not in ``allowed``)."""
        valid = self._entries if allowed is None else allowed
        for name in names:
            if name not in valid:
                raise DartsError(choices_message(self.kind, name, valid))

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
