"""Search spaces behind one contract (:class:`darts.spaces.base.SearchSpace`).

Importing this package registers the built-in spaces (``darts``, ``nb201``, ``darts_rnn``);
``build_space(cfg)`` builds the one a config names.
"""
from darts.spaces.base import SPACES, SearchSpace, build_space, space_of_network
from darts.spaces.darts_cnn.space import DartsSpace
from darts.spaces.darts_rnn.space import DartsRNNSpace
from darts.spaces.nb201.space import NB201Space
from darts.spaces.mixed import ArchWeights, EdgeWeights, MixedOp

__all__ = ["SPACES", "ArchWeights", "DartsRNNSpace", "DartsSpace", "EdgeWeights", "MixedOp", "NB201Space",
           "SearchSpace", "build_space", "space_of_network"]
