"""Resource-aware search: op costs against hand counts, the network's cost against the built network,
the expected cost and its gradient, budgets at derivation, the latency cache, and bad input."""
import pytest
import torch

from darts.errors import DartsError
from darts.export import count_parameters
from darts.resources.budget import BudgetedDerivation
from darts.resources.config import parse_resource
from darts.resources.costs import measure_cost_tables, network_config, op_costs
from darts.resources.measure import LatencyTable, count_macs
from darts.resources.objective import ResourceObjective, ResourceTerm
from darts.spaces.base import build_space
from darts.spaces.mixed import EdgeWeights
from darts.strategies.darts import ClassificationObjective
from tests.helpers import assert_clean_failure, compose_config, read_json, run_script

DARTS_NET = {"network": "cifar", "C": 8, "layers": 5, "stem_stride": 2}
NB201_NET = {"network": "nb201", "C": 8, "N": 1}


def space_of(name: str, *overrides: str):
    return build_space(compose_config("search", [f"space={name}", *overrides]).space)


def memory_latency(repeats: int = 1) -> LatencyTable:
    return LatencyTable("cpu", path=None, warmup=0, repeats=repeats)


@pytest.fixture(scope="module")
def darts_costs():
    space = space_of("darts", "space.C=4", "space.layers=3")
    return space, measure_cost_tables(space, DARTS_NET, 10, 1, 28, memory_latency())


@pytest.mark.parametrize("stride", [1, 2])
def test_op_costs_equal_hand_counts_for_sep_conv_3x3_and_dil_conv_5x5(stride):
    C, size = 16, 32
    out = (size // stride) ** 2
    # sep_conv_k: two (depthwise k x k, pointwise 1 x 1, affine BN) blocks, the stride in the first depthwise.
    params, macs, latency = op_costs("sep_conv_3x3", (C, size, size), stride, memory_latency())
    assert params == 2 * (9 * C + C * C) + 4 * C
    assert macs == 2 * (9 * C + C * C) * out
    assert latency > 0
    params, macs, _ = op_costs("dil_conv_5x5", (C, size, size), stride, memory_latency())
    assert params == 25 * C + C * C + 2 * C
    assert macs == (25 * C + C * C) * out
    if stride == 1:   # the facts file's check figure: sep3 at C = 16, 32 x 32 out
        assert op_costs("sep_conv_3x3", (16, 32, 32), 1, memory_latency())[1] == 819_200
    assert op_costs("none", (C, size, size), stride, memory_latency()) == (0.0, 0.0, 0.0)


def test_network_cost_predicted_from_tables_equals_the_built_network_exactly(darts_costs):
    space, costs = darts_costs
    for seed in range(4):
        genotype = space.random_genotype(seed)
        network = space.build_network(genotype, network_config(DARTS_NET), 10, 1)
        predicted = costs.of_genotype(genotype)
        assert predicted["params"] == count_parameters(network)
        assert predicted["macs"] == count_macs(network, (1, 28, 28), "cpu")
    nb201 = space_of("nb201", "space.C=4", "space.N=1")
    tables = measure_cost_tables(nb201, NB201_NET, 10, 3, 16, memory_latency())
    for seed in range(4):
        genotype = nb201.random_genotype(seed)
        network = nb201.build_network(genotype, network_config(NB201_NET), 10, 3)
        assert tables.of_genotype(genotype)["params"] == count_parameters(network)
        assert tables.of_genotype(genotype)["macs"] == count_macs(network, (3, 16, 16), "cpu")


def test_cost_tables_sum_each_op_over_the_cells_of_its_type(darts_costs):
    space, costs = darts_costs
    # 5 cells: normal (C 8, 14 x 14), reduce (C 16, 14 -> 7), normal (16, 7), reduce (32, 7 -> 4), normal (32, 4)
    # (stem stride 2 on 28 x 28); a reduction cell's edges from its inputs run at stride 2.
    column = space.primitives.index("sep_conv_3x3")
    edge_from_input = 0   # n0 <- c_{k-2}: stride 2 in a reduction cell

    def sep3(C, pixels):
        return 2 * (9 * C + C * C) * pixels

    assert costs.tables["macs"]["normal"][edge_from_input, column] == sep3(8, 14 * 14) + sep3(16, 7 * 7) + sep3(32, 4 * 4)
    assert costs.tables["macs"]["reduce"][edge_from_input, column] == sep3(16, 7 * 7) + sep3(32, 4 * 4)
    assert costs.tables["params"]["normal"][edge_from_input, space.primitives.index("max_pool_3x3")] == 0


def test_expected_cost_is_softmax_weighted_sum_and_its_gradient_reaches_the_alphas(darts_costs):
    _, costs = darts_costs
    generator = torch.Generator().manual_seed(0)
    alphas = {cell: torch.randn(table.shape, dtype=torch.float64, generator=generator).requires_grad_()
              for cell, table in costs.tables["params"].items()}
    weights = {cell: torch.softmax(a, dim=-1) for cell, a in alphas.items()}
    expected = costs.expected("params", weights)
    by_hand = sum(float((weights[cell].detach() * costs.tables["params"][cell]).sum()) for cell in alphas)
    assert float(expected.detach()) == pytest.approx(by_hand, rel=1e-12)
    expected.backward()
    for cell, alpha in alphas.items():
        p, cost = weights[cell].detach(), costs.tables["params"][cell]
        # d/d alpha_i of sum_j p_j c_j = p_i (c_i - sum_j p_j c_j), row by row
        by_hand = p * (cost - (p * cost).sum(-1, keepdim=True))
        torch.testing.assert_close(alpha.grad, by_hand)
        assert alpha.grad.abs().sum() > 0


def test_linear_resource_term_adds_to_the_architecture_loss_only(darts_costs):
    _, costs = darts_costs
    term = ResourceTerm(parse_resource({"metric": "params", "weight": 0.5, "reference": 0.02}))
    term.use(costs)
    objective = ResourceObjective(ClassificationObjective(torch.nn.CrossEntropyLoss()), term)
    arch = {cell: EdgeWeights(torch.full(t.shape, 1.0 / t.shape[1], dtype=torch.float64))
            for cell, t in costs.tables["params"].items()}
    batch = (torch.zeros(2, 3), torch.tensor([0, 1]))
    plain = torch.nn.functional.cross_entropy(torch.zeros(2, 2, dtype=torch.float64), batch[1])
    expected_m = (costs.expected("params", arch) + costs.constant["params"]) / 1e6
    loss, _ = objective.loss(lambda x, arch: torch.zeros(2, 2, dtype=torch.float64), batch, arch)
    assert float(loss) == pytest.approx(float(plain + 0.5 * (expected_m - 0.02) / 0.02))
    weight_loss, _ = objective.loss(lambda x, arch: torch.zeros(2, 2, dtype=torch.float64), batch, arch,
                                    regularized=True)
    assert float(weight_loss) == pytest.approx(float(plain))


def crafted_weights(space, favourite: str):
    """Weights whose plain derivation keeps ``favourite`` (an expensive op) on every edge."""
    weights = {}
    for cell, (edges, ops) in space.arch_shapes().items():
        rows = torch.full((edges, ops), 0.1, dtype=torch.float64)
        rows[:, space.primitives.index(favourite)] = 0.3
        rows[:, space.primitives.index("skip_connect")] = 0.2
        weights[cell] = rows / rows.sum(-1, keepdim=True)
    return weights


def test_a_budget_the_plain_derivation_exceeds_is_met_by_the_derived_network(darts_costs):
    space, costs = darts_costs
    weights = crafted_weights(space, "sep_conv_5x5")
    plain = space.derive(weights)
    plain_params = costs.of_genotype(plain)["params"]
    limit = costs.constant["params"] + 0.5 * (plain_params - costs.constant["params"])
    budget = BudgetedDerivation(costs, {"params": limit})
    genotype = budget.derive(space.derive, weights)
    built = space.build_network(genotype, network_config(DARTS_NET), 10, 1)
    assert count_parameters(built) <= limit < plain_params == count_parameters(
        space.build_network(plain, network_config(DARTS_NET), 10, 1))
    # It gives up only what the budget needs: still sep_conv_5x5 on some edges, skips elsewhere.
    ops = [op for op, _ in genotype.normal + genotype.reduce]
    assert "sep_conv_5x5" in ops and "skip_connect" in ops
    # A budget the plain derivation meets changes nothing.
    assert BudgetedDerivation(costs, {"params": plain_params}).derive(space.derive, weights) == plain


def test_a_budget_no_genotype_can_meet_gives_one_clear_error(darts_costs):
    space, costs = darts_costs
    budget = BudgetedDerivation(costs, {"params": costs.constant["params"] / 2})
    with pytest.raises(DartsError, match=r"no genotype of this search meets the budget \(max_params=.*fixed part"):
        budget.derive(space.derive, crafted_weights(space, "sep_conv_5x5"))


def test_latency_is_measured_once_per_device_op_and_shape_and_cached_on_disk(tmp_path):
    cache = tmp_path / "latency.json"
    first = LatencyTable("cpu", cache, warmup=0, repeats=2)
    op = torch.nn.Conv2d(4, 4, 3, padding=1)
    value = first.get("conv", op, (4, 8, 8), 1)
    assert first.get("conv", op, (4, 8, 8), 1) == value and first.measured == 1
    first.save()
    second = LatencyTable("cpu", cache, warmup=0, repeats=2)
    assert second.get("conv", op, (4, 8, 8), 1) == value and second.measured == 0
    assert second.get("conv", op, (4, 8, 8), 2) > 0 and second.measured == 1
    cache.write_text("{not json")
    with pytest.raises(DartsError, match="latency cache .* is not readable JSON"):
        LatencyTable("cpu", cache)


def test_bad_resource_config_is_refused_with_the_valid_choices():
    with pytest.raises(DartsError, match="unknown resource.metric 'flops'; valid choices: null, params, macs, latency"):
        parse_resource({"metric": "flops"})
    with pytest.raises(DartsError, match="unknown resource.form 'log'"):
        parse_resource({"metric": "params", "form": "log"})
    with pytest.raises(DartsError, match="resource.max_params must be > 0"):
        parse_resource({"max_params": -1})
    with pytest.raises(DartsError, match="unknown key"):
        parse_resource({"max_param": 3})


def test_search_under_a_budget_end_to_end_reports_the_final_network(tmp_path):
    run_dir = tmp_path / "search"
    result = run_script("train_search.py", "experiment=smoke", "search.epochs=1", "resource=params",
                        "resource.weight=0.5", "resource.max_params=2900", "resource.latency.cache=null",
                        "resource.latency.repeats=2", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    results = read_json(run_dir / "results.json")
    final = results["final_network"]
    assert final["params"] <= 2900 and final["params"] == final["predicted"]["params"]
    assert final["macs"] == final["predicted"]["macs"] and final["latency_ms"] > 0
    record = results["history"][-1]
    assert record["genotype_params"] == final["params"] and record["expected_params"] > 0
    failed = run_script("train_search.py", "experiment=smoke", "search.epochs=1", "resource.max_params=100",
                        "resource.latency.cache=null", f"hydra.run.dir={tmp_path / 'impossible'}")
    assert_clean_failure(failed, "no genotype of this search meets the budget (max_params=100)")
    refused = run_script("train_search.py", "experiment=smoke", "strategy=random_ws", "resource=params",
                         f"hydra.run.dir={tmp_path / 'random_ws'}")
    assert_clean_failure(refused, "has no architecture loss to add a resource term to")


@pytest.mark.parametrize("strategy, space", [("gdas", "darts"), ("darts", "nb201")])
def test_a_binding_budget_holds_under_each_derivation_rule(strategy, space, tmp_path):
    """GDAS's own per-node rule and NAS-Bench-201's argmax, through a search: halfway between the fixed
    part and the unconstrained genotype's cost, the found network meets the budget."""
    sizes = ["space.C=4", "space.layers=3", "train.C=4", "train.layers=3"] if space == "darts" else \
        ["space.C=4", "space.N=1", "resource.network={network: nb201, C: 4, N: 1}"]
    common = ["experiment=smoke", f"strategy={strategy}", f"space={space}", "search.epochs=1",
              "search.max_steps_per_epoch=2", "resource.latency.cache=null", "resource.latency.repeats=1", *sizes]
    free = run_script("train_search.py", *common, "resource.max_params=1e9", f"hydra.run.dir={tmp_path / 'free'}")
    assert free.returncode == 0, free.stderr
    unconstrained = read_json(tmp_path / "free" / "results.json")["final_network"]
    limit = (unconstrained["params"] + unconstrained["fixed_part"]["params"]) / 2
    run = run_script("train_search.py", *common, f"resource.max_params={limit}", f"hydra.run.dir={tmp_path / 'cut'}")
    assert run.returncode == 0, run.stderr
    results = read_json(tmp_path / "cut" / "results.json")
    assert results["final_network"]["params"] <= limit < unconstrained["params"]
    assert results["genotype_string"] != read_json(tmp_path / "free" / "results.json")["genotype_string"]


def test_a_strategy_with_a_fixed_cell_refuses_resource_terms(tmp_path):
    refused = run_script("train_search.py", "experiment=smoke", "strategy=gdas_frc", "resource=params",
                         "resource.latency.cache=null", f"hydra.run.dir={tmp_path}")
    assert_clean_failure(refused, "GDAS-FRC's fixed reduction cell has no cost table")
