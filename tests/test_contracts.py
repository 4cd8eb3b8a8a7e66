"""Contract tests generated from the registries: a new op, space or strategy is tested the moment it
is registered, with no edit here.

* every op (each conv once per registered activation): output shape at stride 1 and 2 (odd and even
  sizes), with and without affine BN;
* every space: one config file; the supernet's mixed edges match ``arch_shapes``; derive -> write ->
  read round trips (string and JSON); random and published genotypes build a final network; with every
  registered activation (``space.activations``) its supernet holds each conv once per activation;
* every strategy x every space it can search: a smoke search whose genotype belongs to the space,
  and a run stopped mid-epoch by a signal that, resumed, ends exactly as an uninterrupted one.
"""
import json
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from darts.diagnostics import cell_op_counts
from darts.activations import ACTIVATIONS
from darts.ops import OPS, build_op, expand_activations
from darts.preemption import Preempted
from darts.engine import SEARCH_TASKS, Run, run_search
from darts.spaces import SPACES, MixedOp, build_space
from darts.spaces.mixed import EdgeWeights
from darts.strategies import STRATEGIES
from helpers import compose_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# The image spaces. A language-model space (``language_model`` on its class) takes tokens and a hidden
# state, not images: tests/test_rnn_space.py and tests/test_rnn_train.py hold its contract tests.
IMAGE_SPACES = [name for name in SPACES.names() if not getattr(SPACES.get(name), "language_model", False)]


# -- ops -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", OPS.names())
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("affine", [False, True])
def test_every_op_keeps_channels_and_divides_the_size_by_its_stride(name, stride, size, affine):
    torch.manual_seed(0)
    op = build_op(name, 4, stride, affine)
    out = op(torch.randn(2, 4, size, size))
    expected = -(-size // stride)
    assert out.shape == (2, 4, expected, expected)


def test_an_unknown_op_names_the_valid_choices():
    with pytest.raises(Exception, match="unknown op 'sep_conv_9x9'; valid choices: .*dil_conv_3x3"):
        build_op("sep_conv_9x9", 4, 1, False)


# -- spaces ------------------------------------------------------------------------------------
def space_config(name: str, **sizes):
    """The space's own config file, shrunk for a CPU test: every size key it has set small."""
    path = CONF_DIR / "space" / f"{name}.yaml"
    assert path.is_file(), f"search space {name!r} has no conf/space/{name}.yaml"
    cfg = OmegaConf.load(path)
    for key, value in {"C": 4, "layers": 3, "N": 1, **sizes}.items():
        if key in cfg:
            cfg[key] = value
    return cfg


def random_weights(space, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {cell: torch.rand(shape, generator=generator, dtype=torch.float64)
            for cell, shape in space.arch_shapes().items()}


def uniform_arch(space) -> dict[str, EdgeWeights]:
    return {cell: EdgeWeights(torch.full(shape, 1.0 / shape[1])) for cell, shape in space.arch_shapes().items()}


def final_config(**extra):
    return OmegaConf.create({"network": "auto", "C": 4, "layers": 3, "N": 1, "auxiliary": False,
                             "drop_path_prob": 0.0, "stem_stride": 1, **extra})


@pytest.mark.parametrize("name", IMAGE_SPACES)
def test_every_space_builds_a_supernet_that_runs_on_the_weights_it_is_given(name):
    space = build_space(space_config(name))
    torch.manual_seed(0)
    model = space.build_supernet(num_classes=3, in_channels=2).eval()
    assert len(space.edge_labels()) == space.num_edges
    assert [edge for node in space.node_edges() for edge in node] == list(range(space.num_edges))
    # The supernet owns no architecture parameters: every parameter is a weight it mixes with.
    assert all(not param.startswith(("alphas", "betas")) for param, _ in model.named_parameters())
    mixed = [module for module in model.modules() if isinstance(module, MixedOp)]
    rows = []
    for module in mixed:
        assert len(module.ops) == len(space.primitives)
        module.register_forward_pre_hook(lambda module, args: rows.append(tuple(args[1].shape)))
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        logits = model(x, uniform_arch(space))
        assert logits.shape == (2, 3)
        # Every mixed op runs once per forward, on one row (ops,) of its cell type's weights.
        assert rows == [(len(space.primitives),)] * len(mixed)
        for cell, (edges, ops) in space.arch_shapes().items():
            changed = uniform_arch(space)
            changed[cell] = EdgeWeights(torch.rand(edges, ops, generator=torch.Generator().manual_seed(1)))
            assert not torch.allclose(model(x, changed), logits), f"the {cell} weights change nothing"


@pytest.mark.parametrize("name", IMAGE_SPACES)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_space_derives_writes_reads_and_builds_a_genotype(name, seed):
    space = build_space(space_config(name))
    genotype = space.derive(random_weights(space, seed))
    assert genotype.ops() <= set(space.primitives)
    assert space.parse_genotype(str(genotype)) == genotype
    assert space.parse_genotype(json.dumps({"genotype": genotype.to_dict()})) == genotype
    assert space.parse_genotype_dict(json.loads(json.dumps(genotype.to_dict()))) == genotype
    assert genotype.cell_graphs(), "a genotype draws as at least one cell"
    network = space.build_network(genotype, final_config(), num_classes=3, in_channels=2)
    network.eval()
    assert network(torch.randn(2, 2, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("name", IMAGE_SPACES)
def test_every_space_takes_every_registered_activation_as_ops_of_its_own(name):
    cfg = space_config(name)
    cfg.activations = ACTIVATIONS.names()
    space = build_space(cfg)
    assert space.op_names == expand_activations(list(cfg.primitives), ACTIVATIONS.names())
    torch.manual_seed(0)
    model = space.build_supernet(num_classes=3, in_channels=2).eval()
    edge_ops = {op for rows in space.edge_ops().values() for row in rows for op in row}
    assert {op for module in model.modules() if isinstance(module, MixedOp) for op in module.primitives} == edge_ops
    x = torch.randn(2, 2, 8, 8)
    with torch.no_grad():
        assert model(x, uniform_arch(space)).shape == (2, 3)
    genotype = space.derive(random_weights(space, 0))
    assert genotype.ops() <= edge_ops and space.parse_genotype(str(genotype)) == genotype
    network = space.build_network(genotype, final_config(), num_classes=3, in_channels=2).eval()
    assert network(x).shape == (2, 3)


@pytest.mark.parametrize("name", IMAGE_SPACES)
def test_every_space_draws_random_cells_it_can_build(name):
    space = build_space(space_config(name))
    generator = torch.Generator().manual_seed(0)
    genotypes = {str(space.architecture_genotype(space.random_architecture(generator))) for _ in range(5)}
    assert len(genotypes) > 1, "five random cells were all the same"
    for text in genotypes:
        genotype = space.parse_genotype(text)
        assert genotype.ops() <= {space.primitives[k] for k in space.random_op_choices()}
        space.build_network(genotype, final_config(), num_classes=3, in_channels=2)


@pytest.mark.parametrize("name", IMAGE_SPACES)
def test_every_published_genotype_of_a_space_round_trips_and_builds(name):
    space = build_space(OmegaConf.load(CONF_DIR / "space" / f"{name}.yaml"))
    for published, genotype in space.published_genotypes().items():
        assert space.resolve_genotype(published) == genotype
        assert space.parse_genotype(str(genotype)) == genotype
        space.build_network(genotype, final_config(), num_classes=3, in_channels=3)


# -- strategies x spaces ------------------------------------------------------------------------
def supported_spaces(strategy_name: str) -> list[str]:
    declared = STRATEGIES.get(strategy_name).spaces
    return [name for name in IMAGE_SPACES if declared is None or name in declared]


STRATEGY_SPACE_PAIRS = [(strategy, space) for strategy in STRATEGIES.names() for space in supported_spaces(strategy)]


def smoke_overrides(strategy: str, space: str) -> list[str]:
    """Seconds-sized runs: tiny data and supernet, two epochs of two steps; options that only make a
    strategy slower (candidates ranked, warm-up epochs) at their smallest where the strategy has them."""
    strategy_cfg = OmegaConf.load(CONF_DIR / "strategy" / f"{strategy}.yaml")
    small = {"num_candidates": 2, "eval_batches": 1, "arch_start_epoch": 0}
    overrides = [f"strategy.{key}={value}" for key, value in small.items() if key in strategy_cfg]
    sizes = space_config(space)
    overrides += [f"space.{key}={sizes[key]}" for key in ("C", "layers", "N") if key in sizes]
    return ["experiment=smoke", f"strategy={strategy}", f"space={space}", "deterministic=true", "search.epochs=2",
            "search.batch_size=8", "dataset.num_train=32", "dataset.image_size=8", "search.eval_max_batches=1",
            # torch 2.14's CPU backward of a channels_last 1x1 stride-2 conv with 2-4 channels corrupts
            # the heap; the tiny supernets' quarter-channel factorized reduces are such convs.
            "fast.channels_last=false", *overrides]


def stopping_task(task_class, stop_epoch: int, stop_after_steps: int):
    """The search's own task, with a SIGUSR1 raised during one step (as a scheduler would send it)."""

    class Stopping(task_class):
        steps_seen = 0

        def train_step(self, batch, epoch):
            metrics = super().train_step(batch, epoch)
            if epoch == stop_epoch:
                type(self).steps_seen += 1
                if type(self).steps_seen == stop_after_steps:
                    signal.raise_signal(signal.SIGUSR1)
            return metrics

    return Stopping


@pytest.mark.parametrize("strategy, space", STRATEGY_SPACE_PAIRS)
def test_every_strategy_searches_every_space_it_declares_and_resumes_exactly(strategy, space, tmp_path):
    overrides = smoke_overrides(strategy, space)
    cfg = compose_config("search", overrides)
    full = run_search(cfg, tmp_path / "full")
    space_impl = build_space(cfg.space)
    genotype = space_impl.parse_genotype((tmp_path / "full" / "genotype.json").read_text())
    assert space_impl.parse_genotype(full["genotype_string"]) == genotype
    assert space_impl.resolve_genotype(str(tmp_path / "full")) == genotype
    assert genotype.ops() <= set(cfg.space.primitives)
    if STRATEGIES.get(strategy).trains == "supernet":
        # Every epoch records the collapse signals of the cell it derived; the last one's is the result.
        graphs = genotype.cell_graphs()
        counts = cell_op_counts(graphs.get("normal") or next(iter(graphs.values())))
        last = full["history"][-1]
        assert (last["normal_skip_connects"], last["normal_parameter_free_ops"]) == tuple(counts.values())
        assert [type(h["genotype_changed"]) for h in full["history"]] == [bool] * len(full["history"])
        assert full["history"][0]["genotype_changed"] is False

    built = STRATEGIES.get(strategy)(**{k: v for k, v in cfg.strategy.items() if k != "name"})
    # Stopped after the first step: the resumed run crosses the rest of that epoch and every later one.
    task_class = stopping_task(SEARCH_TASKS.get(built.trains), stop_epoch=0, stop_after_steps=1)
    with pytest.raises(Preempted):
        Run(cfg, tmp_path / "cut", lambda run_cfg, context: task_class(run_cfg, context, built)).run()
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = run_search(compose_config("search", [*overrides, "resume=true"]), tmp_path / "cut")
    assert resumed["genotype"] == full["genotype"]
    assert resumed.get("alphas") == full.get("alphas"), "architecture parameters must match bit for bit"
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert [h.get("genotype_changed") for h in resumed["history"]] == [h.get("genotype_changed")
                                                                       for h in full["history"]]
    timeless = lambda results: [{k: v for k, v in c.items() if k != "train_time_s"}
                                for c in results.get("candidates", [])]
    assert timeless(resumed) == timeless(full)
