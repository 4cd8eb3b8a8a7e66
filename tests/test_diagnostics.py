"""The dominant Hessian eigenvalue by power iteration against the exact spectrum (autograd's
Hessian): on a quadratic with a known spectrum and on a tiny supernet's architecture weights."""
import pytest
import torch
from omegaconf import OmegaConf

from darts.diagnostics import EigenvalueProbe, cell_op_counts, dominant_eigenvalue, hessian_eigenvalues, ranking_digest
from darts.engine import run_search
from darts.errors import DartsError
from darts.spaces import build_space
from darts.spaces.mixed import EdgeWeights
from darts.viz import load_png, search_diagnostics_chart
from helpers import compose_config
from test_contracts import smoke_overrides


def quadratic(eigenvalues):
    """0.5 x^T A x with A = Q diag(eigenvalues) Q^T for a fixed rotation Q."""
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=torch.float64))
    matrix = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    x = torch.randn(len(eigenvalues), dtype=torch.float64, requires_grad=True)
    return (lambda: 0.5 * x @ matrix @ x), x


# The largest eigenvalue, as RobustDARTS reports it: also when one of larger magnitude is negative.
@pytest.mark.parametrize("eigenvalues, dominant", [([5.0, 1.0, 0.5, -0.2], 5.0), ([-7.0, 3.0, 1.0], 3.0),
                                                   ([-4.0, -1.0, -0.5], -0.5)])
def test_power_iteration_finds_the_known_largest_eigenvalue_of_a_quadratic(eigenvalues, dominant):
    loss_fn, x = quadratic(eigenvalues)
    assert dominant_eigenvalue(loss_fn, [x], iters=200, tol=1e-10) == pytest.approx(dominant, rel=1e-6)
    torch.testing.assert_close(hessian_eigenvalues(loss_fn, [x]), torch.tensor(sorted(eigenvalues),
                                                                               dtype=torch.float64))


def test_on_a_tiny_supernet_it_is_within_two_percent_of_autograds_hessian():
    cfg = OmegaConf.create({"name": "nb201", "primitives": ["skip_connect", "nor_conv_1x1"],
                            "C": 4, "N": 1})
    space = build_space(cfg)
    torch.manual_seed(0)
    model = space.build_supernet(num_classes=3, in_channels=2).double()
    alphas = torch.randn(space.arch_shapes()["normal"], dtype=torch.float64, requires_grad=True)
    inputs, targets = torch.randn(4, 2, 4, 4, dtype=torch.float64), torch.randint(0, 3, (4,))

    def loss_of(alpha):
        logits = model(inputs, {"normal": EdgeWeights(torch.softmax(alpha, -1))})
        return torch.nn.functional.cross_entropy(logits, targets)

    reference = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, alphas.detach()).reshape(
        alphas.numel(), alphas.numel()))
    largest = reference[-1].item()
    estimate = dominant_eigenvalue(lambda: loss_of(alphas), [alphas], iters=100, tol=1e-8)
    assert estimate == pytest.approx(largest, rel=0.02)
    torch.testing.assert_close(hessian_eigenvalues(lambda: loss_of(alphas), [alphas]), reference)


def test_the_global_rng_is_left_alone_and_bad_params_are_refused():
    loss_fn, x = quadratic([2.0, 1.0])
    state = torch.get_rng_state()
    dominant_eigenvalue(loss_fn, [x])
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match="require grad"):
        dominant_eigenvalue(loss_fn, [x.detach()])


def test_cell_op_counts_in_published_cells():
    from darts.spaces.darts_cnn.genotype import DARTS_V2
    from darts.spaces.nb201.genotype import NB201Genotype

    # DARTS_V2's normal cell: five sep_conv_3x3, two skip_connect, one dil_conv_3x3.
    assert cell_op_counts(DARTS_V2.cell_graphs()["normal"]) == {"skip_connects": 2, "parameter_free_ops": 2}
    cell = NB201Genotype.from_string("|skip_connect~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    assert cell_op_counts(next(iter(cell.cell_graphs().values()))) == {"skip_connects": 2, "parameter_free_ops": 5}


def test_the_probe_measures_at_either_interval_and_the_last_epoch():
    probe = EigenvalueProbe(OmegaConf.create({"eigenvalue_every": 3}), rule_every=2, epochs=10)
    assert [e for e in range(10) if probe.due(e)] == [0, 2, 3, 4, 6, 8, 9]
    assert not any(EigenvalueProbe(OmegaConf.create({}), 0, 10).due(e) for e in range(10))
    with pytest.raises(DartsError, match="valid choices: power, exact"):
        EigenvalueProbe(OmegaConf.create({"eigenvalue_method": "lanczos"}), 0, 10)


def test_ranking_digest_sees_only_the_order_of_parametric_ops():
    primitives = ["none", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]
    base = {"normal": torch.tensor([[0.1, 0.5, 0.3, 0.1]])}
    free_moved = {"normal": torch.tensor([[0.4, 0.1, 0.3, 0.2]])}   # sep > dil still; none/skip moved
    swapped = {"normal": torch.tensor([[0.1, 0.5, 0.1, 0.3]])}      # dil > sep
    edge_ops = {"normal": [primitives]}
    assert ranking_digest(base, edge_ops) == ranking_digest(free_moved, edge_ops)
    assert ranking_digest(base, edge_ops) != ranking_digest(swapped, edge_ops)


def test_a_search_records_the_eigenvalue_power_within_two_percent_of_exact_without_moving_the_search(tmp_path):
    common = [*smoke_overrides("darts", "nb201"), "search.epochs=3", "diagnostics.eigenvalue_every=1"]
    power = run_search(compose_config("search", [*common, "diagnostics.eigenvalue_iters=100",
                                                 "diagnostics.eigenvalue_tol=1e-7"]), tmp_path / "power")
    exact = run_search(compose_config("search", [*common, "diagnostics.eigenvalue_method=exact"]), tmp_path / "exact")
    plain = run_search(compose_config("search", smoke_overrides("darts", "nb201") + ["search.epochs=3"]),
                       tmp_path / "plain")
    for p, e in zip(power["history"], exact["history"]):
        assert p["eigenvalue"] == pytest.approx(e["eigenvalue"], rel=0.02)
    assert all("eigenvalue" not in h for h in plain["history"])
    # Measuring draws no random numbers of the run's and leaves BN statistics alone: the search is unchanged.
    assert [h["loss"] for h in power["history"]] == [h["loss"] for h in plain["history"]]
    assert power["alphas"] == plain["alphas"]
    chart = load_png(tmp_path / "power" / "diagnostics.png")
    assert chart.shape[2] == 3 and chart.shape[0] > 300


def test_the_chart_marks_an_early_stop():
    history = [{"epoch": e, "eigenvalue": 0.1 * (e + 1), "normal_skip_connects": e % 3} for e in range(6)]
    red = lambda image: int(((image[..., 0] > 200) & (image[..., 1] < 80) & (image[..., 2] < 80)).sum())
    assert red(search_diagnostics_chart(history, 10)) == 0
    history[-1]["stop"] = {"epoch": 5, "genotype_epoch": 3, "reason": "test"}
    assert red(search_diagnostics_chart(history, 10)) > 100
