"""The search-space contract, and the registry every space is chosen from.

A search space is one subclass of :class:`SearchSpace` registered with ``@SPACES.register(name)``
plus one file in ``conf/space/`` whose ``name`` selects it. It says, for the rest of the code:

* its ops and cell topology: ``primitives`` (the configured ops, each conv once per activation of
  ``space.activations``: :func:`darts.ops.expand_activations`), ``cell_types`` (one alpha matrix
  each), ``num_edges``, ``node_edges`` (which edges feed each node), ``edge_labels`` (heatmap rows);
* the architecture parameters' shape: ``arch_shapes()`` = {cell type: (edges, ops)};
* the supernet: ``build_supernet(num_classes, in_channels, mixed_op)``, an ``nn.Module`` called as
  ``supernet(x, arch)`` with ``arch`` = {cell type: :class:`~darts.spaces.mixed.EdgeWeights`}
  (x: (N, in_channels, H, W) -> logits (N, num_classes)); it owns no architecture parameters;
* derivation: ``derive(weights, max_skip_connects=None)`` turns {cell type: (edges, ops) non-negative
  weights} into a genotype by the space's published rule, optionally with P-DARTS's skip cap;
  ``random_architecture``/``architecture_genotype`` define a uniformly random cell (random search);
* the genotype format: ``genotype_class`` with ``from_dict``/``from_string``/``to_dict``/``__str__``/
  ``ops()``/``cell_graphs()``; ``published_genotypes()`` by name;
* the final network: ``build_network(genotype, train_cfg, num_classes, in_channels)``, one of
  ``networks`` (``train_cfg.network``; ``auto`` = the first). Each network has ``config``,
  ``genotype``, ``network_name``, ``set_drop_path_prob(p)`` and returns ``(logits, aux or None)`` in
  training mode, ``logits`` in eval mode.
"""
from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from darts.activations import ACTIVATIONS, DEFAULT_ACTIVATION, check_activations
from darts.errors import DartsError
from darts.ops import OPS, base_op, expand_activations
from darts.registry import Registry

SPACES: Registry[type["SearchSpace"]] = Registry("search space")
# A random cell: per cell type, each edge's op index, or None for an edge that is switched off.
Architecture = dict[str, list[int | None]]
# genotype=random:SEED names the uniformly random cell drawn with that seed (random baselines).
RANDOM_GENOTYPE_PREFIX = "random:"


class SearchSpace(abc.ABC):
    """Built from the ``space`` config node: ``SPACES.get(cfg.name)(cfg)``."""

    name: ClassVar[str]
    genotype_class: ClassVar[type]
    networks: ClassVar[dict[str, type[nn.Module]]]
    cell_types: ClassVar[tuple[str, ...]]
    # Whether the supernet puts an affine-free BN after each pool (DARTS does, NAS-Bench-201 does not);
    # a strategy that builds its own mixed op (PC-DARTS) passes it on.
    pool_bn: ClassVar[bool] = True

    def __init__(self, cfg):
        self.cfg = cfg
        primitives = list(cfg.primitives)
        if not primitives:
            raise DartsError("search space needs at least one op in space.primitives")
        if len(set(primitives)) != len(primitives):
            raise DartsError(f"space.primitives lists an op twice: {primitives}")
        OPS.check(primitives)
        activations = cfg.get("activations")
        self.activations = check_activations([DEFAULT_ACTIVATION] if activations is None else activations)
        # Each conv once per activation (darts.ops: sep_conv_3x3, sep_conv_3x3_gelu, ...): the columns
        # the strategies search. [relu] leaves the configured list as it is.
        expanded = expand_activations(primitives, self.activations)
        if len(set(expanded)) != len(expanded):
            raise DartsError(f"space.primitives with space.activations={self.activations} lists an op twice: "
                             f"{expanded} (name each conv once, without an activation suffix)")
        self.primitives = expanded
        # The ops of this space (space.edge_primitives rows name ops from it); a space whose weight
        # columns are not op names (per-edge op lists) keeps its op set here.
        self.op_names = list(expanded)

    # -- topology ---------------------------------------------------------------------------
    @abc.abstractmethod
    def node_edges(self) -> list[range]:
        """The edge indices feeding each computed node, in edge order: [range(0, 2), range(2, 5), ...]."""

    @property
    def num_edges(self) -> int:
        return self.node_edges()[-1].stop

    @abc.abstractmethod
    def edge_labels(self) -> list[str]:
        """One label per edge ('n1<-c_{k-1}', '2<-1', ...): the rows of the heatmaps."""

    def edge_ops(self) -> dict[str, tuple[tuple[str, ...], ...]]:
        """{cell type: each edge's ops, in the order of its weight columns}: what column k of edge e's
        (edges, k) weights is (derivation, diagnostics). Default: ``primitives`` on every edge."""
        return {cell: (tuple(self.primitives),) * self.num_edges for cell in self.cell_types}

    def arch_shapes(self) -> dict[str, tuple[int, int]]:
        """{cell type: (edges, ops)}: the architecture parameters a strategy owns for this space."""
        return {cell: (self.num_edges, len(self.primitives)) for cell in self.cell_types}

    # -- supernet and derivation --------------------------------------------------------------
    @abc.abstractmethod
    def build_supernet(self, num_classes: int, in_channels: int, mixed_op=None) -> nn.Module:
        """The supernet; ``mixed_op(C, stride, primitives)`` builds each edge (None: the space's own)."""

    @abc.abstractmethod
    def derive(self, weights: dict[str, torch.Tensor], max_skip_connects: int | None = None):
        """{cell type: (edges, ops) weights} -> the genotype, by the space's published rule.

        ``max_skip_connects`` = M caps the ``skip_connect`` edges of the derived normal cell (a space
        with one cell type: that cell) at M, P-DARTS's rule (``selection.max_skip_connects``): while
        more remain, the kept skip edge with the lowest skip weight gets its best other op. Other cell
        types are never capped. None = no cap, the published rule unchanged; a cap the space cannot
        meet raises DartsError. Check it with :func:`skip_cap`.
        """

    def random_op_choices(self) -> list[int]:
        """Op indices a random cell draws from (a DARTS cell cannot hold ``none``; NB201 draws all)."""
        return [k for k, name in enumerate(self.primitives) if name != "none"]

    @abc.abstractmethod
    def random_architecture(self, generator: torch.Generator) -> Architecture:
        """A uniformly random cell per cell type, drawn with ``generator``."""

    @abc.abstractmethod
    def architecture_genotype(self, architecture: Architecture):
        """The genotype of a random architecture."""

    # -- genotypes ------------------------------------------------------------------------------
    def published_genotypes(self) -> dict[str, Any]:
        return {}

    def parse_genotype(self, text: str):
        """A genotype from its JSON (``to_dict``, optionally under "genotype") or its string form."""
        text = str(text).strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise DartsError(f"malformed genotype JSON: {err}") from None
            if isinstance(data, dict) and isinstance(data.get("genotype"), (dict, str)):
                data = data["genotype"]
            return self.parse_genotype_dict(data)
        return self.checked(self.genotype_class.from_string(text))

    def parse_genotype_dict(self, data):
        return self.checked(self.genotype_class.from_dict(data))

    def genotype_ops(self) -> list[str]:
        """The ops a genotype of this space may use: ``op_names``, each conv with any registered activation.
        Which activation a conv starts with is the genotype's to say, so a cell searched with
        ``space.activations=[relu,gelu]`` trains in a space composed with the default ``[relu]``."""
        bases = dict.fromkeys(base_op(name) for name in self.op_names)
        return list(dict.fromkeys(self.op_names + expand_activations(list(bases), ACTIVATIONS.names())))

    def checked(self, genotype):
        """``genotype`` if its ops are all in :meth:`genotype_ops` (``space.primitives``, any activation);
        a DartsError naming the extra ones."""
        extra = sorted(genotype.ops() - set(self.genotype_ops()))
        if extra:
            raise DartsError(f"genotype uses op(s) {', '.join(extra)} not in the configured op set "
                             f"(space.primitives): {', '.join(self.op_names)} (each conv with any of the "
                             f"activations {', '.join(ACTIVATIONS.names())})")
        return genotype

    def random_genotype(self, seed: int):
        """The uniformly random cell that ``random:SEED`` names: :meth:`random_architecture` drawn
        with a generator seeded ``seed`` (the same cell on every machine and torch version that
        keeps torch's CPU generator)."""
        return self.architecture_genotype(self.random_architecture(torch.Generator().manual_seed(seed)))

    def resolve_genotype(self, spec):
        """A genotype from a published name, ``random:SEED`` (a uniformly random cell of this
        space), a genotype file, a search run directory (its genotype.json) or a genotype string,
        in this space's format."""
        spec = str(spec).strip()
        published = self.published_genotypes()
        if spec in published:
            return self.checked(published[spec])
        if spec.startswith(RANDOM_GENOTYPE_PREFIX):
            seed = spec[len(RANDOM_GENOTYPE_PREFIX):]
            if not seed.isdigit():
                raise DartsError(f"genotype {spec!r}: random genotypes are named random:SEED with SEED an "
                                 "integer >= 0, e.g. random:3")
            return self.random_genotype(int(seed))
        looks_like_text = spec.startswith(("{", "|")) or "(" in spec
        path = Path(spec)
        if not looks_like_text and path.is_dir():
            if not (path / "genotype.json").is_file():
                raise DartsError(f"directory {path} holds no genotype.json: is it a finished search run?")
            path = path / "genotype.json"
        if not looks_like_text and path.is_file():
            try:
                return self.parse_genotype(path.read_text())
            except DartsError as err:
                raise DartsError(f"{path}: {err}") from None
            except UnicodeDecodeError:
                raise DartsError(f"{path} is not a text genotype file") from None
        if looks_like_text:
            return self.parse_genotype(spec)
        raise DartsError(f"unknown genotype {spec!r} for the {self.name} space; known genotypes: "
                         f"{', '.join(published) or 'none'} (or give random:SEED, a genotype.json, a search run "
                         "directory or a genotype string)")

    # -- final network ------------------------------------------------------------------------------
    def network_name(self, name: str) -> str:
        """``name`` if it is one of this space's final networks; ``auto`` is the first of them."""
        if name == "auto":
            return next(iter(self.networks))
        if name not in self.networks:
            space_of_network(name)  # a name no space knows is "unknown", with every space's networks listed
            raise DartsError(f"network {name!r} cannot train genotypes of the {self.name} space; "
                             f"valid choices: auto, {', '.join(self.networks)}")
        return name

    def network_class(self, name: str) -> type[nn.Module]:
        return self.networks[self.network_name(name)]

    @abc.abstractmethod
    def build_network(self, genotype, train_cfg, num_classes: int, in_channels: int) -> nn.Module:
        """The discrete network that final training trains from scratch."""

    def network_overrides(self, train_cfg) -> dict:
        """Space-config overrides under which this space's supernet has the cells of the final network
        ``build_network(genotype, train_cfg, ...)`` builds (channels, depth, stem): each edge then runs
        at the shape its op runs at in that network, which is what resource costs are measured at
        (:mod:`darts.resources.costs`). A space that cannot say refuses resource-aware search."""
        raise DartsError(f"the {self.name} space cannot measure what its final network's ops cost: resource-aware "
                         "search and budgets (resource=...) need SearchSpace.network_overrides")


def build_space(cfg) -> SearchSpace:
    """The search space named ``cfg.name``, built from its config node."""
    return SPACES.get(cfg.get("name"))(cfg)


def space_of_network(network_name: str) -> type[SearchSpace]:
    """The registered space whose final networks include ``network_name``."""
    for space in SPACES.items():
        if network_name in space[1].networks:
            return space[1]
    valid = [name for _, space in SPACES.items() for name in space.networks]
    raise DartsError(f"unknown network {network_name!r}; valid choices: {', '.join(valid)}")


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DartsError(f"{name} must be a positive integer, got {value!r}")
    return value


def skip_cap(value) -> int | None:
    """``value`` if it is a valid cap on skip connections (None or an integer >= 0); else DartsError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DartsError(f"selection.max_skip_connects must be null (no cap) or an integer >= 0, got {value!r}")
    return value
