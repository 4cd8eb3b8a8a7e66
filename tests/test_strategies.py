"""PC-DARTS, GDAS, DrNAS and random search with weight sharing: tiny CPU checks of what makes each one;
a smoke search of every strategy in every space, and of op subsets."""
import copy

import pytest
import torch
from omegaconf import OmegaConf

from darts.diagnostics import normal_cell_counts
from darts.engine import run_search
from darts.metrics import ranking_order
from darts.runtime import Runtime
from darts.spaces import MixedOp, build_space
from darts.spaces.darts_cnn.genotype import PRIMITIVES, Genotype, derive_from_weights
from darts.spaces.nb201.genotype import NB201Genotype
from darts.strategies import build_strategy
from darts.strategies.pcdarts import PartialChannelMixedOp
from helpers import compose_config

SPACE = OmegaConf.create(dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=3, steps=4, multiplier=4,
                              stem_multiplier=3))
OPTIM = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=0.01, betas=[0.5, 0.999], weight_decay=1e-3)))
CPU = torch.device("cpu")
OPTIONS = {
    "pcdarts": dict(partial_channels=2, arch_start_epoch=0),
    "gdas": dict(),
    "drnas": dict(),
    "random_ws": dict(num_candidates=3, eval_batches=1, top_k=0, forward="sampled"),
}
NAMES = list(OPTIONS)


def make(name, seed=0, **changes):
    """A strategy set up on a fresh tiny supernet (C=4, 3 cells), at epoch 0 of 2 epochs of 2 steps."""
    torch.manual_seed(seed)
    space = build_space(SPACE)
    strategy = build_strategy(OmegaConf.create(dict(name=name, **{**OPTIONS[name], **changes})))
    model = strategy.build_supernet(space, 4, 3)
    strategy.setup(space, model, OPTIM, epochs=2, steps_per_epoch=2, runtime=Runtime(CPU, channels_last=False))
    strategy.start_epoch(0)
    return strategy, model


def batches(n, seed=3, size=8):
    """n batches of (4, 3, size, size) images and (4,) labels of 4 classes."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, size, size, generator=gen), torch.randint(0, 4, (4,), generator=gen))
            for _ in range(n)]


def mixed_ops(model):
    return [edge for cell in model.cells for edge in cell.edges]


def per_node_softmax(betas, steps=4):
    """PC-DARTS edge normalisation written out: a softmax over each node's incoming edges."""
    rows, start = [], 0
    for node in range(steps):
        rows.append(torch.exp(betas[start:start + node + 2]) / torch.exp(betas[start:start + node + 2]).sum())
        start += node + 2
    return torch.cat(rows)


@pytest.mark.parametrize("name", NAMES)
def test_each_strategy_trains_a_tiny_supernet_and_derives_a_genotype(name):
    strategy, model = make(name)
    before = [p.detach().clone() for p in model.parameters()]
    data = batches(4)
    for step in range(2):
        metrics = strategy.step(data[step], iter(data[2:]), epoch=0)
        assert torch.isfinite(metrics["loss_sum"]) and metrics["count"] == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    genotype = strategy.genotype()
    assert isinstance(genotype, Genotype) and genotype.steps == 4
    assert strategy.space.parse_genotype(genotype.to_json()) == genotype
    weights = strategy.mixing_weights()
    assert set(weights) == {"normal", "reduce"} and all(w.shape == (14, 8) for w in weights.values())
    assert all(w.dtype == torch.float64 and (w >= 0).all() for w in weights.values())
    for arch in (strategy.forward_weights(), strategy.eval_arch_weights()):
        assert set(arch) == {"normal", "reduce"} and all(w.weights.shape == (14, 8) for w in arch.values())
        model.eval()
        assert model(data[0][0], arch).shape == (4, 4)
        model.train()
    strategy.end_epoch(0)


def test_pcdarts_runs_one_kth_of_the_channels_through_the_ops():
    strategy, model = make("pcdarts", partial_channels=2)
    edge_inputs, op_inputs = {}, []
    for edge in mixed_ops(model):
        assert isinstance(edge, PartialChannelMixedOp)
        edge.register_forward_pre_hook(lambda m, args: edge_inputs.__setitem__(m, args[0].shape[1]))
        for op in edge.ops:
            op.register_forward_pre_hook(lambda m, args, edge=edge: op_inputs.append((edge, args[0].shape[1])))
    x, _ = batches(1)[0]
    assert model(x, strategy.forward_weights()).shape == (4, 4)
    assert op_inputs and len(edge_inputs) == 14 * 3
    assert all(channels == edge_inputs[edge] // 2 for edge, channels in op_inputs)
    assert {channels for channels in edge_inputs.values()} == {4, 8, 16}  # one normal, two reduction cells


def test_pcdarts_edge_normalisation_weights_nodes_and_derivation():
    strategy, model = make("pcdarts")
    arch = strategy.arch
    names = [name for name, _ in arch.named_parameters()]
    assert names == ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"]
    assert [id(p) for p in strategy.arch_parameters()] == [id(p) for p in arch.parameters()]
    with torch.no_grad():
        for p in strategy.arch_parameters():
            p.copy_(torch.randn(p.shape) * 2)

    expected_weights = {cell: torch.softmax(arch.alphas()[cell].detach().double(), -1)
                        * per_node_softmax(arch.betas()[cell].detach().double())[:, None]
                        for cell in ("normal", "reduce")}
    assert strategy.genotype() == derive_from_weights(expected_weights, PRIMITIVES, 4)
    for cell in ("normal", "reduce"):
        torch.testing.assert_close(strategy.mixing_weights()[cell], expected_weights[cell])
        # A training forward scales each edge's output by its node-normalised beta.
        edge_weights = strategy.forward_weights()[cell]
        torch.testing.assert_close(edge_weights.edge_scales.detach(),
                                   per_node_softmax(arch.betas()[cell].detach()))
        torch.testing.assert_close(edge_weights.weights.detach(), torch.softmax(arch.alphas()[cell].detach(), -1))
    # The supernet sums each node's edges scaled so: the first (normal) cell's last node, the last C of its
    # 4C output channels, is sum_j scale_j * edge_j over its five incoming edges (9..13).
    first_cell = model.cells[0]
    edge_outputs, cell_output = {}, []
    for index, edge in enumerate(first_cell.edges):
        edge.register_forward_hook(lambda m, args, out, index=index: edge_outputs.__setitem__(index, out))
    first_cell.register_forward_hook(lambda m, args, out: cell_output.append(out))
    arch_weights = strategy.forward_weights()
    with torch.no_grad():
        model(batches(1)[0][0], arch_weights)
    scales = arch_weights["normal"].edge_scales.detach()
    last_node = sum(scales[j] * edge_outputs[j] for j in range(9, 14))
    torch.testing.assert_close(cell_output[0][:, -last_node.shape[1]:], last_node)
    assert not torch.allclose(last_node, sum(edge_outputs[j] for j in range(9, 14)))
    # The betas scale the node sums, so an alpha step moves them.
    betas = arch.betas_normal.detach().clone()
    data = batches(3)
    strategy.step(data[0], iter(data[1:]), epoch=0)
    assert not torch.equal(betas, arch.betas_normal.detach())


def test_pcdarts_betas_get_gradients_and_freeze_before_arch_start_epoch():
    strategy, model = make("pcdarts", arch_start_epoch=1)
    frozen = [p.detach().clone() for p in strategy.arch_parameters()]
    data = batches(3)
    strategy.step(data[0], iter(data[1:]), epoch=0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, strategy.arch_parameters()))
    loss, _ = strategy.loss(data[1])
    loss.backward()
    assert strategy.arch.betas_normal.grad.abs().sum() > 0 and strategy.arch.betas_reduce.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["gdas", "random_ws"])
def test_sampling_strategies_run_exactly_one_op_per_chosen_edge(name, record_cell_weights):
    strategy, model = make(name)
    calls = []
    for edge in mixed_ops(model):
        for op in edge.ops:
            op.register_forward_hook(lambda m, args, out: calls.append(m))
    seen = record_cell_weights(model)
    data = batches(3)
    strategy.step(data[0], iter(data[1:]), epoch=0)
    assert seen, "the supernet ran no forward"
    # One record per cell per forward (cells normal, reduce, reduce); the cells of one type share a sample.
    assert len(seen) % 3 == 0 and [cell for cell, _ in seen[:3]] == ["normal", "reduce", "reduce"]
    for forward in range(len(seen) // 3):
        assert seen[3 * forward + 1][1] is seen[3 * forward + 2][1]
    none = PRIMITIVES.index("none")
    expected = 0
    for cell_type, edge_weights in seen:
        active = edge_weights.active
        assert active is not None and len(active) == 14
        # The weights are one-hot in value, at the op that runs (zero rows for switched-off edges).
        for edge, op in enumerate(active):
            row = edge_weights.weights[edge].detach()
            if op is None:
                assert torch.equal(row, torch.zeros(8))
            else:
                torch.testing.assert_close(row, torch.nn.functional.one_hot(torch.tensor(op), 8).float())
        expected += sum(op is not None and op != none for op in active)
        if name == "random_ws":  # two edges per node, never `none`
            start = 0
            for node in range(4):
                node_ops = active[start:start + node + 2]
                assert sum(op is not None for op in node_ops) == 2 and none not in node_ops
                start += node + 2
    assert len(calls) == expected
    if name == "gdas":
        assert len(seen) == 6  # an alpha forward and a weight forward, three cells each
    else:
        assert len(seen) == 3  # a weight forward only


def test_gdas_temperature_anneals_linearly_and_gradients_reach_the_alphas():
    strategy, model = make("gdas")
    taus = []
    for epoch in range(2):
        strategy.start_epoch(epoch)
        taus.append(strategy.tau)
    assert taus == [10.0, 0.1]
    strategy.start_epoch(0)
    loss, _ = strategy.loss(batches(1)[0])
    loss.backward()
    assert strategy.arch.alphas_normal.grad.abs().sum() > 0 and strategy.arch.alphas_reduce.grad.abs().sum() > 0


def test_drnas_samples_lie_on_the_simplex_and_the_loss_reaches_the_concentration():
    strategy, model = make("drnas")
    first, second = strategy.forward_weights(), strategy.forward_weights()
    for cell in ("normal", "reduce"):
        sample = first[cell].weights
        assert sample.shape == (14, 8) and (sample >= 0).all() and first[cell].active is None
        assert (sample.sum(-1) - 1).abs().max() <= 1e-6
        assert not torch.equal(sample, second[cell].weights), "every training forward draws a new sample"
    loss, _ = strategy.loss(batches(1)[0])
    loss.backward()
    alphas = strategy.arch.alphas()
    assert alphas["normal"].grad.abs().sum() > 0 and alphas["reduce"].grad.abs().sum() > 0
    # Evaluation mixes with the Dirichlet mean, concentration / its sum with concentration = elu(alpha) + 1
    # (deterministic); the cell is derived from softmax(alpha), as DrNAS's model_search.py genotype() does
    # (tests/test_drnas.py has the case where the two rank differently).
    for cell, alpha in alphas.items():
        concentration = torch.nn.functional.elu(alpha.detach().double()) + 1
        mean = concentration / concentration.sum(-1, keepdim=True)
        torch.testing.assert_close(strategy.eval_arch_weights()[cell].weights.double(), mean)
        torch.testing.assert_close(strategy.mixing_weights()[cell], torch.softmax(alpha.detach().double(), -1))


def test_random_ws_has_no_alpha_optimiser_and_keeps_the_best_ranked_candidate():
    strategy, model = make("random_ws")
    assert strategy.arch_parameters() == [] and strategy.arch_record() == {}
    data = batches(4)
    metrics = strategy.step(data[0], iter(data[1:]), epoch=0)
    assert "alpha_loss_sum" not in metrics and "a_optimizer" not in strategy.checkpointables()
    running = [b.clone() for name, b in model.named_buffers() if "running" in name]
    scores = strategy.rank()   # candidate i is scored on the stream's batch i (eval_batches=1)
    accuracies, losses = scores["accuracies"], scores["losses"]
    assert len(losses) == len(accuracies) == 3
    assert all(torch.equal(a, b) for a, b in zip(running, [b for n, b in model.named_buffers() if "running" in n]))
    # The winner has the best accuracy (metric=accuracy, ties to the lower loss), scored in eval mode
    # (their model.eval()), and is what evaluation runs and the genotype describes.
    best = scores["first_order"][0]
    arch = strategy.eval_arch_weights()
    assert [arch[cell].active for cell in ("normal", "reduce")] == [strategy.winner["normal"],
                                                                    strategy.winner["reduce"]]
    model.eval()
    with torch.no_grad():
        inputs, targets = data[1 + best]
        logits = model(inputs, arch)
        winner_loss = torch.nn.functional.cross_entropy(logits, targets).item()
        winner_acc = (logits.argmax(1) == targets).float().mean().item()
    assert winner_acc == pytest.approx(max(accuracies))
    assert winner_loss == pytest.approx(losses[best], rel=1e-5)
    genotype = strategy.genotype()
    for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        kept = [(PRIMITIVES[op], edge) for edge, op in enumerate(strategy.winner[cell]) if op is not None]
        assert len(kept) == len(pairs) == 8
        edges = strategy.space.node_edges()
        assert [(op, edges[node].index(edge)) for node in range(4) for op, edge in kept
                if edge in edges[node]] == list(pairs)


def test_ranking_order_follows_the_selection_metric():
    accuracies, losses = [0.5, 0.75, 0.75, 0.25], [0.9, 0.8, 0.6, 0.1]
    assert ranking_order(accuracies, losses, "accuracy") == [2, 1, 0, 3]   # tie at 0.75: the lower loss
    assert ranking_order(accuracies, losses, "loss") == [3, 2, 1, 0]
    assert ranking_order([0.5, 0.5], [0.2, 0.2], "accuracy") == [0, 1]    # full tie: the earlier one


def test_random_ws_ranked_by_loss_keeps_the_lowest_loss_and_a_skip_cap_picks_within_it():
    strategy, model = make("random_ws", num_candidates=12, metric="loss")
    data = batches(13)
    strategy.step(data[0], iter(data[1:]), epoch=0)
    scores = strategy.rank()
    best = scores["first_order"][0]
    model.eval()
    with torch.no_grad():
        inputs, targets = data[1 + best]
        winner_loss = torch.nn.functional.cross_entropy(model(inputs, strategy.eval_arch_weights()), targets).item()
    assert winner_loss == pytest.approx(min(scores["losses"]), rel=1e-5)
    capped = strategy.genotype(max_skip_connects=1)
    assert normal_cell_counts(capped)["skip_connects"] <= 1
    first_within = next(c for c in strategy.ranked
                        if normal_cell_counts(strategy.space.architecture_genotype(c))["skip_connects"] <= 1)
    assert str(capped) == str(strategy.space.architecture_genotype(first_within))


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_reproduces_the_next_step(name, record_cell_weights):
    original, model = make(name)
    data = batches(6)
    original.step(data[0], iter(data[1:2]), epoch=0)
    model_state = copy.deepcopy(model.state_dict())
    saved = copy.deepcopy({key: obj.state_dict() for key, obj in original.checkpointables().items()})

    restored, twin = make(name, seed=1)  # other weights, other generator seeds until loaded
    twin.load_state_dict(model_state)
    for key, obj in restored.checkpointables().items():
        obj.load_state_dict(copy.deepcopy(saved[key]))

    results = []
    for strategy, net in ((original, model), (restored, twin)):
        torch.manual_seed(123)  # the global RNG is the engine's to checkpoint (DrNAS samples from it)
        strategy.start_epoch(1)
        seen = record_cell_weights(net)
        strategy.step(data[2], iter(data[3:5]), epoch=1)
        results.append(([p.detach().clone() for p in [*net.parameters(), *strategy.arch_parameters()]],
                        [(cell, w.active, w.weights.detach().clone()) for cell, w in seen], strategy.genotype()))
    (params_a, arch_a, genotype_a), (params_b, arch_b, genotype_b) = results
    assert [(cell, active) for cell, active, _ in arch_a] == [(cell, active) for cell, active, _ in arch_b]
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(arch_a, arch_b)) and genotype_a == genotype_b
    assert len(params_a) == len(params_b) and all(torch.equal(a, b) for a, b in zip(params_a, params_b))


def test_unchanged_supernet_has_no_betas_and_plain_mixed_ops():
    strategy, model = make("gdas")
    assert strategy.arch.betas() == {} and [name for name, _ in strategy.arch.named_parameters()] == [
        "alphas_normal", "alphas_reduce"]
    assert all(w.edge_scales is None for w in strategy.forward_weights().values())
    assert all(type(edge) is MixedOp for edge in mixed_ops(model))


# Every strategy in every space where it is defined: the config group file and the overrides that make a
# tiny smoke search of it (one epoch, one weight step of 16 synthetic images, a C=4 network).
SMOKE_STRATEGIES = {
    "darts": [],
    "darts_2nd": [],
    # torch 2.14 on the CPU corrupts the heap in the backward of a channels_last 1x1 stride-2 conv
    # with 2-4 channels, which the tiny C=4 supernet's quarter-channel factorized reduces are.
    "pcdarts": ["strategy.arch_start_epoch=0", "fast.channels_last=false"],
    "gdas": [],
    "drnas": [],
    "random_ws": ["strategy.num_candidates=2", "strategy.eval_batches=1"],
    "random_sampling": ["strategy.num_candidates=2"],
}
SMOKE_SPACES = {"darts": [], "nb201": ["space.N=1"]}


def smoke_search(strategy, space, run_dir, *overrides):
    cfg = compose_config("search", ["experiment=smoke", f"space={space}", f"strategy={strategy}", "search.epochs=1",
                                    "dataset.num_train=32", "deterministic=true", *SMOKE_STRATEGIES[strategy],
                                    *SMOKE_SPACES[space], *overrides])
    return cfg, run_search(cfg, run_dir)


def assert_valid_genotype_of_space(genotype, space, primitives):
    """A cell of the space: NB201's 6 edges, or DARTS's 4 nodes of two distinct earlier inputs per cell."""
    assert genotype.ops() <= set(primitives), (genotype.ops(), primitives)
    if space == "nb201":
        assert isinstance(genotype, NB201Genotype) and len(genotype.edge_ops()) == 6
        return
    assert isinstance(genotype, Genotype) and "none" not in genotype.ops()
    for pairs, concat in ((genotype.normal, genotype.normal_concat), (genotype.reduce, genotype.reduce_concat)):
        assert len(pairs) == 8 and concat == (2, 3, 4, 5)
        for node in range(4):
            inputs = [source for _, source in pairs[2 * node:2 * node + 2]]
            assert len(set(inputs)) == 2 and all(0 <= source < node + 2 for source in inputs), (node, inputs)


# Every registered strategy x every space it declares runs a smoke search and resumes exactly:
# tests/test_contracts.py, generated from the registries.


@pytest.mark.parametrize("strategy, space, subset", [
    ("darts", "darts", ["none", "max_pool_3x3", "dil_conv_5x5"]),
    ("random_sampling", "nb201", ["skip_connect", "nor_conv_1x1"]),
])
def test_a_search_on_an_op_subset_derives_only_those_ops(strategy, space, subset, tmp_path):
    cfg, results = smoke_search(strategy, space, tmp_path / "run", f"space.primitives=[{','.join(subset)}]")
    search_space = build_space(cfg.space)
    genotype = search_space.parse_genotype_dict(results["genotype"])
    assert_valid_genotype_of_space(genotype, space, subset)
    if strategy == "random_sampling":
        for candidate in results["candidates"]:
            assert search_space.parse_genotype_dict(candidate["genotype"]).ops() <= set(subset)
    else:
        assert all(len(row) == len(subset) for row in results["alphas"]["alphas_normal"])
