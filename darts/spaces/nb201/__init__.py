"""The NAS-Bench-201 space: genotype, supernet, final network; importing it registers the space."""
from darts.spaces.nb201.genotype import NB201_PRIMITIVES, NB201Genotype, genotype_from_edge_ops
from darts.spaces.nb201.network import NB201Network
from darts.spaces.nb201.space import NB201Space
from darts.spaces.nb201.supernet import NB201SuperNet

__all__ = ["NB201_PRIMITIVES", "NB201Genotype", "NB201Network", "NB201Space", "NB201SuperNet",
           "genotype_from_edge_ops"]
