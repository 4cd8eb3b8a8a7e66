"""Search strategies; importing this package registers the built-in ones."""
from darts.strategies.base import STRATEGIES, SearchStrategy, build_strategy, register_strategy
from darts.strategies import darts as _darts  # noqa: F401  (registers 'darts')

__all__ = ["STRATEGIES", "SearchStrategy", "build_strategy", "register_strategy"]
