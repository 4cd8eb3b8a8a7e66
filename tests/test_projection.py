"""DARTS-PT selection (selection=darts_pt): the decisions on crafted supernets, the projection
transform, the schedule the config gives, end-to-end runs in both spaces and an exact resume."""
import os
import signal

import pytest
import torch
from omegaconf import OmegaConf

from darts.checkpoint import CHECKPOINT_NAME
from darts.engine import Run, run_search
from darts.engine.projection import DartsPTSelection, tuning_config
from darts.errors import DartsError
from darts.preemption import Preempted
from darts.projection import (Projection, Schedule, Settings, op_decision, supernet_score, topology_decision,
                              without_edge)
from darts.spaces import MixedOp, build_space
from darts.spaces.mixed import EdgeWeights
from darts.strategies import STRATEGIES
from darts.strategies.darts import DARTS
from helpers import compose_config, read_json


def one_hot(rows: list[int], num_ops: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(rows), num_ops).float()


def bn_buffers(model) -> list[torch.Tensor]:
    return [b.clone() for name, b in model.named_buffers() if "running" in name]


def self_labelled(model, arch, count=32, seed=0):
    """Random images labelled by the supernet's own train-mode predictions under ``arch``: 100 % top-1
    for the unperturbed weights, so any change to what the network computes shows as a drop. The
    classifier's bias is set to centre the logits on this batch (pooled features all look alike at
    initialisation), so the labels spread over the classes."""
    torch.manual_seed(seed)
    inputs = torch.randn(count, 3, 8, 8)
    features = []
    hook = model.classifier.register_forward_hook(lambda module, args, out: features.append(args[0]))
    with torch.no_grad():
        model.train()(inputs, arch)
        hook.remove()
        model.classifier.bias.copy_(-model.classifier.weight @ features[0].mean(0))
        labels = model(inputs, arch).argmax(1)
    assert len(labels.unique()) > 1
    return [(inputs, labels)]


# -- decisions on crafted supernets ------------------------------------------------------------------
def test_the_op_decision_keeps_the_one_op_that_carries_the_signal():
    space = build_space(OmegaConf.create({"name": "nb201", "primitives": ["none", "nor_conv_1x1", "nor_conv_3x3"],
                                          "C": 4, "N": 1}))
    torch.manual_seed(0)
    model = space.build_supernet(num_classes=4, in_channels=3)
    # Every 1x1 conv outputs zeros (its BN normalises a zero map to zero): on the one live edge only the
    # 3x3 conv carries the input to the output; every other edge is `none`.
    for mixed in (m for m in model.modules() if isinstance(m, MixedOp)):
        for parameter in mixed.ops[1].parameters():
            parameter.data.zero_()
    rows = one_hot([0] * 6, 3)
    rows[3] = torch.tensor([0.2, 0.3, 0.5])          # edge 3<-0
    arch = {"normal": EdgeWeights(rows)}
    batches = self_labelled(model, arch)
    before = bn_buffers(model)
    measure = lambda weights: supernet_score(model, model, weights, batches)

    for metric in ("accuracy", "loss"):
        kept, scores = op_decision(measure, arch, "normal", 3, [0, 1, 2], metric)
        assert kept == 2, (metric, scores)
    assert scores[0] == scores[1] and scores[0][0] == 100.0       # removing `none` or the dead 1x1 changes nothing
    assert scores[2][0] < 100.0 and scores[2][1] > scores[0][1]   # removing the 3x3 conv cuts the signal
    assert all(torch.equal(a, b) for a, b in zip(before, bn_buffers(model)))   # BN running statistics untouched


def test_the_topology_decision_drops_the_input_whose_removal_hurts_least():
    space = build_space(OmegaConf.create({"name": "darts", "primitives": ["none", "skip_connect", "sep_conv_3x3"],
                                          "C": 4, "layers": 3, "steps": 2, "multiplier": 1, "stem_multiplier": 3}))
    torch.manual_seed(0)
    model = space.build_supernet(num_classes=4, in_channels=3)
    # Node 1 (the cell's output) reads c_{k-2} through a sep conv, c_{k-1} through a skip and node 0
    # through `none`: its third input adds nothing.
    arch = {cell: EdgeWeights(one_hot([2, 2, 2, 1, 0], 3)) for cell in space.cell_types}
    batches = self_labelled(model, arch)
    measure = lambda weights: supernet_score(model, model, weights, batches)
    for cell in space.cell_types:
        kept, rounds = topology_decision(measure, arch, cell, [2, 3, 4], "accuracy")
        assert kept == [2, 3], rounds
        scores = dict(rounds[0])
        assert scores[4][0] == 100.0 and max(scores[2][0], scores[3][0]) < 100.0, rounds


def test_each_topology_round_removes_one_edge_from_the_node_as_it_stands_ties_to_the_later_one():
    """A node of four inputs: two rounds, each scoring every remaining input's removal on its own."""
    seen = []

    def measure(arch):
        zeroed = [edge for edge in range(5) if not arch["normal"].weights[edge].any()]
        seen.append(zeroed)
        return {1: (50.0, 1.0), 2: (70.0, 0.5), 3: (70.0, 0.5), 4: (60.0, 0.8)}[zeroed[0]]

    arch = {"normal": EdgeWeights(torch.full((5, 3), 1 / 3))}
    kept, rounds = topology_decision(measure, arch, "normal", [1, 2, 3, 4], "accuracy")
    assert seen == [[1], [2], [3], [4], [1], [2], [4]]           # one edge off at a time, round after round
    assert [[edge for edge, _ in scored] for scored in rounds] == [[1, 2, 3, 4], [1, 2, 4]]
    assert kept == [1, 4]                                        # 3 (tied with 2, later) goes first, then 2


def test_without_edge_switches_a_sampled_edge_off():
    arch = {"normal": EdgeWeights(one_hot([1, 2, 0], 3), [1, 2, 0])}
    off = without_edge(arch, "normal", 1)["normal"]
    assert off.active == [1, None, 0] and not off.weights[1].any() and torch.equal(off.weights[0], arch["normal"].weights[0])


# -- the transform ---------------------------------------------------------------------------------
def test_the_projection_makes_decided_edges_one_hot_removed_edges_off_and_leaves_the_rest():
    space = build_space(OmegaConf.create({"name": "darts", "primitives": ["none", "skip_connect", "sep_conv_3x3"],
                                          "C": 4, "layers": 3, "steps": 4, "multiplier": 4, "stem_multiplier": 3}))
    projection = Projection(space.cell_types, space.node_edges(), [1, 2, 3])
    normal = projection.cells["normal"]
    normal.decide_op(0, 2)
    normal.decide_op(4, 1)
    normal.keep_inputs(1, [2, 4])                 # node 1 = edges 2, 3, 4: edge 3 goes
    torch.manual_seed(0)
    alphas = torch.randn(14, 3, requires_grad=True)
    weights = torch.softmax(alphas, -1)
    scales = torch.rand(14)
    arch = {cell: EdgeWeights(weights, None, scales) for cell in space.cell_types}
    projected = projection(arch)

    rows = projected["normal"].weights
    assert torch.equal(rows[0], torch.tensor([0.0, 0.0, 1.0])) and torch.equal(rows[4], torch.tensor([0.0, 1.0, 0.0]))
    assert not rows[3].any()
    untouched = [e for e in range(14) if e not in (0, 3, 4)]
    assert torch.equal(rows[untouched], weights[untouched])               # bit for bit the strategy's weights
    assert projected["normal"].edge_scales is scales and projected["normal"].active is None
    assert torch.equal(projected["reduce"].weights, weights)              # an undecided cell passes as it came
    rows.sum().backward()
    assert not alphas.grad[[0, 3, 4]].any() and alphas.grad[untouched].abs().sum() > 0   # decided rows are constants
    # A sampling strategy's op list (GDAS): decided edges run their op, removed ones nothing.
    sampled = projection({"normal": EdgeWeights(one_hot([1] * 14, 3), [1] * 14)})["normal"]
    assert sampled.active[:5] == [2, 1, 1, None, 1]
    # The mixing weights a genotype is derived from go through the same projection.
    mixing = projection.project_weights({"normal": weights.detach().double()})["normal"]
    assert mixing.dtype == torch.float64 and torch.equal(mixing[0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


# -- the schedule and the config ----------------------------------------------------------------------
def test_the_published_settings_give_14_op_and_3_topology_decisions_over_81_epochs_in_the_darts_space():
    cfg = compose_config("search", ["experiment=darts_pt"])
    assert "none" not in cfg.space.primitives          # their space s5
    settings = Settings.from_cfg(cfg.selection)
    space = build_space(cfg.space)
    nodes = settings.topology_nodes(space.name, space.node_edges())
    assert nodes == [1, 2, 3]
    schedule = Schedule(space.num_edges, len(nodes), settings.interval, settings.tune_epochs)
    assert (schedule.events, schedule.epochs) == (17, 81)
    assert schedule.epoch_of == list(range(0, 81, 5))
    assert [schedule.is_op_event(e) for e in range(17)] == [True] * 14 + [False] * 3
    tune = tuning_config(cfg, settings, schedule.epochs)
    # lr/10 held (their cosine is never stepped); alphas keep moving from the first tuning epoch.
    assert (tune.optim.weights.lr, tune.optim.weights.lr_min) == pytest.approx((0.0025, 0.0025))
    assert tune.search.epochs == 81 and tune.strategy.arch_start_epoch == 0 and tune.search.eval_batch_size == 64
    pcdarts = compose_config("search", ["experiment=darts_pt", "strategy=pcdarts"])
    assert tuning_config(pcdarts, settings, 81).strategy.arch_start_epoch == 0     # no second warm-up
    blank = OmegaConf.merge(pcdarts, {"selection": {"update_alphas": False}})
    frozen = tuning_config(blank, Settings.from_cfg(blank.selection), 81)
    assert frozen.strategy.arch_start_epoch == 81       # blank / fix-alpha: the alphas never step


def test_the_nb201_settings_give_6_decisions_over_25_epochs_and_bad_settings_are_refused():
    cfg = compose_config("search", ["experiment=darts_pt_nb201"])
    settings = Settings.from_cfg(cfg.selection)
    space = build_space(cfg.space)
    assert settings.topology_nodes(space.name, space.node_edges()) == []
    schedule = Schedule(space.num_edges, 0, settings.interval, settings.tune_epochs)
    assert (schedule.events, schedule.epochs, schedule.epoch_of) == (6, 25, [0, 5, 10, 15, 20, 24])
    auto = Settings.from_cfg(compose_config("search", ["space=nb201", "selection=darts_pt"]).selection)
    assert auto.topology_nodes("nb201", space.node_edges()) == []      # auto: NB201 keeps every edge
    with pytest.raises(DartsError, match="use at least 22"):
        Schedule(6, 0, 5, 21)
    with pytest.raises(DartsError, match="unknown selection.metric 'top5'; valid choices: accuracy, loss"):
        Settings.from_cfg(OmegaConf.merge(cfg.selection, {"metric": "top5"}))


# -- end to end --------------------------------------------------------------------------------------
SMOKE = ["experiment=smoke", "selection=darts_pt", "deterministic=true", "search.epochs=1", "search.batch_size=8",
         "dataset.num_train=32", "dataset.image_size=8", "search.eval_max_batches=1", "search.eval_every=0",
         "fast.channels_last=false", "selection.interval=1", "selection.eval_max_batches=1"]
NB201 = [*SMOKE, "space=nb201", "space.C=4", "space.N=1"]
# Three nodes (9 edges; nodes 1 and 2 have 3 and 4 inputs) keep the run to seconds; the schedule at four
# is checked above.
DARTS_SPACE = [*SMOKE, "space.C=4", "space.layers=3", "space.steps=3", "space.multiplier=3",
               "space.primitives=[none,skip_connect,avg_pool_3x3]", "search.max_steps_per_epoch=1"]


def check_published(run_dir, search_results, space):
    """The selected genotype is the run's genotype.json; the search's own is kept beside it."""
    selection = read_json(run_dir / "selection" / "results.json")
    genotype = space.parse_genotype(selection["genotype_string"])
    assert space.resolve_genotype(str(run_dir)) == genotype            # what train_final.py genotype=RUN_DIR reads
    assert read_json(run_dir / "genotype_argmax.json")["string"] == search_results["genotype_string"]
    entry = read_json(run_dir / "results.json")["selection"]
    assert entry["name"] == "darts_pt" and entry["genotype_string"] == str(genotype)
    assert entry["decisions"] == len(selection["decisions"])
    return selection, genotype


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory):
    """One uninterrupted NB201 search + selection, shared by the tests that read it."""
    run_dir = tmp_path_factory.mktemp("nb201") / "full"
    return run_dir, run_search(compose_config("search", NB201), run_dir)


def test_selection_in_the_nb201_space_decides_each_edge_once_and_publishes_the_cell(nb201_run):
    run_dir, results = nb201_run
    space = build_space(compose_config("search", NB201).space)
    selection, genotype = check_published(run_dir, results, space)
    assert results["selection"]["genotype_string"] == str(genotype)
    assert selection["tune_epochs"] == 6 and len(selection["history"]) == 6
    decisions = selection["decisions"]
    assert [d["epoch"] for d in decisions] == [0, 1, 2, 3, 4, 5]
    assert sorted(d["edge"] for d in decisions) == list(range(6))         # every edge once, in a random order
    assert all(len(d["alternatives"]) == 5 for d in decisions)             # all five ops, `none` included
    chosen = dict((d["edge"], d["op"]) for d in decisions)
    assert str(genotype) == str(space.architecture_genotype(
        {"normal": [space.primitives.index(chosen[edge]) for edge in range(6)]}))
    assert all(sorted(row) == [0.0] * 4 + [1.0] for row in selection["projected_weights"]["normal"])


def test_selection_in_the_darts_space_decides_ops_then_two_inputs_per_node(tmp_path):
    cfg = compose_config("search", DARTS_SPACE)
    results = run_search(cfg, tmp_path)
    space = build_space(cfg.space)
    selection, genotype = check_published(tmp_path, results, space)
    # Per cell: 9 op decisions, then nodes 1 and 2; one event an epoch and the last at the last epoch.
    assert (selection["op_decisions"], selection["topology_decisions"], selection["tune_epochs"]) == (18, 4, 11)
    assert [d["epoch"] for d in selection["decisions"]] == [epoch for epoch in range(11) for _ in range(2)]
    for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        decided = [d for d in selection["decisions"] if d["cell"] == cell]
        assert [d["kind"] for d in decided] == ["op"] * 9 + ["topology"] * 2
        ops = {d["edge"]: d["op"] for d in decided if d["kind"] == "op"}
        assert sorted(ops) == list(range(9)) and "none" not in ops.values()   # a DARTS cell never keeps `none`
        assert all(len(d["alternatives"]) == 2 for d in decided if d["kind"] == "op")
        kept = {d["node"]: [e["edge"] for e in d["kept"]] for d in decided if d["kind"] == "topology"}
        assert sorted(kept) == [1, 2] and [len(d["rounds"]) for d in decided if d["kind"] == "topology"] in (
            [1, 2], [2, 1])                                                     # 3 inputs: one round; 4: two
        kept[0] = [0, 1]
        expected = [(ops[edge], edge - space.node_edges()[node].start)
                    for node in range(3) for edge in kept[node]]
        assert sorted(map(tuple, pairs)) == sorted(expected), cell      # the genotype is the projected cell


def test_a_strategy_without_architecture_weights_is_refused_before_the_search(tmp_path):
    cfg = compose_config("search", [*NB201, "strategy=random_ws"])
    with pytest.raises(DartsError, match=r"strategy 'random_ws' .*valid strategies: darts, .*gdas"):
        run_search(cfg, tmp_path)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_a_strategy_whose_forwards_skip_the_constraint_is_refused(tmp_path):
    class Unconstrained(DARTS):
        name = "unconstrained"

        def eval_arch_weights(self):
            with torch.no_grad():
                return {cell: EdgeWeights(torch.softmax(a, -1)) for cell, a in self.arch.alphas().items()}

    with STRATEGIES.temporarily("unconstrained", Unconstrained):
        cfg = compose_config("search", [*NB201, "strategy.name=unconstrained"])
        with pytest.raises(DartsError, match="'unconstrained' .*do not pass through constrained.*valid strategies"):
            Run(cfg, tmp_path, lambda run_cfg, context: DartsPTSelection(run_cfg, context,
                                                                         Settings.from_cfg(cfg.selection), tmp_path))


def signalling_darts(call_number):
    """DARTS whose ``call_number``-th step, counting the search's and the selection's, sends SIGUSR1."""
    calls = []

    class SignallingDARTS(DARTS):
        def step(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == call_number:
                os.kill(os.getpid(), signal.SIGUSR1)
            return super().step(*args, **kwargs)

    return SignallingDARTS


def test_a_selection_stopped_mid_epoch_resumes_exactly(nb201_run, tmp_path):
    full_dir, full = nb201_run
    # 2 weight steps an epoch: the search's 2, then selection epochs 0 and 1, then epoch 2's first step.
    with STRATEGIES.temporarily("signalling_darts", signalling_darts(7)):
        with pytest.raises(Preempted, match="SIGUSR1 at epoch 2 step 1"):
            run_search(compose_config("search", [*NB201, "strategy.name=signalling_darts"]), tmp_path / "cut")
    assert not (tmp_path / "cut" / "selection" / "results.json").exists()
    search_checkpoint = (tmp_path / "cut" / CHECKPOINT_NAME).stat().st_mtime_ns
    resumed = run_search(compose_config("search", [*NB201, "resume=true"]), tmp_path / "cut")
    assert (tmp_path / "cut" / CHECKPOINT_NAME).stat().st_mtime_ns == search_checkpoint   # the search is not rerun
    assert resumed["selection"] == full["selection"]
    runs = (tmp_path / "cut", full_dir)
    cut, whole = (read_json(run / "selection" / "results.json") for run in runs)
    assert cut["decisions"] == whole["decisions"] and cut["alphas"] == whole["alphas"]
    assert [h["loss"] for h in cut["history"]] == [h["loss"] for h in whole["history"]]
    weights = [torch.load(run / "selection" / CHECKPOINT_NAME, weights_only=False)["task"]["tuning"]["model"]
               for run in runs]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[1])
    assert read_json(runs[0] / "genotype.json") == read_json(runs[1] / "genotype.json")
    published = read_json(runs[0] / "results.json")
    with pytest.raises(DartsError, match=r"other selection settings \(interval\)"):
        run_search(compose_config("search", [*NB201, "resume=true", "selection.interval=2"]), tmp_path / "cut")
    assert read_json(runs[0] / "results.json") == published       # refused before anything was rewritten
