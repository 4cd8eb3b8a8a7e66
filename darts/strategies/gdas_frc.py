"""GDAS-FRC (Dong & Yang, CVPR 2019): GDAS searching the normal cell only, with a fixed, hand-designed
reduction cell (D-X-Y/AutoDL-Projects: xautodl/models/cell_searchs/search_model_gdas_frc_nasnet.py,
``NASNetworkGDAS_FRC``; the cell is cell_operations.py's ``GDAS_Reduction_Cell``, here
:class:`~darts.spaces.darts_cnn.fixed_reduction.FixedReductionCell`; run by
scripts-search/NASNet-space-search-by-GDAS-FRC.sh with configs/search-archs/GDASFRC-NASNet-CIFAR.config).

Everything else is GDAS's (:mod:`darts.strategies.gdas`): the sampling, the step, the temperature, the
per-node derivation of the normal cell. The strategy owns one alpha matrix, the normal cell's, drawn
as theirs right after the supernet's weights.

The genotype: their search returns the normal cell alone (``NASNetworkGDAS_FRC.genotype``, lines
140-166: ``normal`` and ``normal_concat``); the authors' first code writes such a result as a genotype
with ``reduce=None`` (D-X-Y/GDAS lib/nas/genotypes.py ``GDAS_F1``, with ``reduce_concat=[2, 3, 4, 5]``),
and so does this one (``reduce_concat`` = the normal cell's concat, unused). train_final.py then builds
the fixed reduction cell at the reduction positions (:mod:`darts.spaces.darts_cnn.network`).
"""
from __future__ import annotations

import torch.nn as nn

from darts.runtime import Runtime
from darts.spaces.base import SearchSpace
from darts.strategies.base import STRATEGIES
from darts.strategies.gdas import GDAS


class NormalCellOnly:
    """A DARTS space seen by a strategy that searches its normal cell only: ``arch_shapes`` and
    ``cell_types`` name the normal cell; everything else is the wrapped space's."""

    cell_types = ("normal",)

    def __init__(self, space: SearchSpace):
        self.space = space

    def __getattr__(self, name: str):
        return getattr(self.space, name)

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        return {"normal": self.space.arch_shapes()["normal"]}


@STRATEGIES.register("gdas_frc")
class GDASFRC(GDAS):
    """GDAS's options (conf/strategy/gdas_frc.yaml); the reduction cells are fixed."""

    name = "gdas_frc"
    spaces = ("darts",)
    fixed_reduction = True

    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        super().setup(NormalCellOnly(space), model, optim_cfg, epochs, steps_per_epoch, runtime)

    def reduction_pairs(self, cells: dict[str, list[tuple[str, int]]]) -> None:
        """No reduction cell is searched: None, the genotype's mark of the fixed one (see the module)."""
        return None
