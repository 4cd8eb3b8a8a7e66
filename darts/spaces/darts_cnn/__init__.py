"""The DARTS CNN space: genotype, supernet, final networks; importing it registers the space."""
from darts.spaces.darts_cnn.genotype import DARTS_V1, DARTS_V2, PC_DARTS, PRIMITIVES, Genotype, derive_genotype
from darts.spaces.darts_cnn.network import NetworkCIFAR, NetworkImageNet, drop_path
from darts.spaces.darts_cnn.space import DartsSpace
from darts.spaces.darts_cnn.supernet import SearchCell, SuperNet

__all__ = ["DARTS_V1", "DARTS_V2", "PC_DARTS", "PRIMITIVES", "DartsSpace", "Genotype", "NetworkCIFAR",
           "NetworkImageNet", "SearchCell", "SuperNet", "derive_genotype", "drop_path"]
