"""Search strategies behind one contract (:mod:`darts.strategies.base`); importing this package
registers the built-in ones."""
from darts.strategies import darts as _darts  # noqa: F401  (registers 'darts')
from darts.strategies import darts_minus as _darts_minus  # noqa: F401  (registers 'darts_minus')
from darts.strategies import drnas as _drnas  # noqa: F401  (registers 'drnas')
from darts.strategies import gdas as _gdas  # noqa: F401  (registers 'gdas')
from darts.strategies import gdas_frc as _gdas_frc  # noqa: F401  (registers 'gdas_frc')
from darts.strategies import pcdarts as _pcdarts  # noqa: F401  (registers 'pcdarts')
from darts.strategies import pdarts as _pdarts  # noqa: F401  (registers 'pdarts')
from darts.strategies import random_sampling as _random_sampling  # noqa: F401  (registers 'random_sampling')
from darts.strategies import random_ws as _random_ws  # noqa: F401  (registers 'random_ws')
from darts.strategies import sdarts as _sdarts  # noqa: F401  (registers 'sdarts_rs', 'sdarts_adv')
from darts.strategies.base import STRATEGIES, Strategy, SupernetStrategy, build_strategy

__all__ = ["STRATEGIES", "Strategy", "SupernetStrategy", "build_strategy"]
