"""The DARTS recurrent space: genotype, supernet, final network; importing it registers the space."""
from darts.spaces.darts_rnn.genotype import DARTS_V1, DARTS_V2, RNN_PRIMITIVES, RecurrentGenotype, derive_recurrent
from darts.spaces.darts_rnn.network import RecurrentNetwork
from darts.spaces.darts_rnn.space import DartsRNNSpace
from darts.spaces.darts_rnn.supernet import RecurrentSuperNet

__all__ = ["DARTS_V1", "DARTS_V2", "DartsRNNSpace", "RNN_PRIMITIVES", "RecurrentGenotype", "RecurrentNetwork",
           "RecurrentSuperNet", "derive_recurrent"]
