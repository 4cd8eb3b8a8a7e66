"""Random search with weight sharing as liamcli/randomNAS_release runs it: `none` sampled, every op run in
training (their discrete=True forward), candidates scored in eval mode on their own next batches, the best
re-scored on more batches, and the result the best re-scored candidate the space can write as a genotype."""
import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces import build_space
from darts.spaces.darts_cnn.genotype import PRIMITIVES
from darts.strategies import build_strategy
from darts.strategies.random_ws import RandomWS

SPACE = dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=3, steps=4, multiplier=4, stem_multiplier=3)
# Three ops keep the every-op forward of the full-forward test cheap on two cores.
SMALL = dict(SPACE, primitives=["none", "skip_connect", "sep_conv_3x3"])
NB201 = dict(name="nb201", primitives=["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"],
             C=4, N=1)
OPTIM = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=0.01, betas=[0.5, 0.999], weight_decay=1e-3)))
NONE = PRIMITIVES.index("none")


def make(space=SPACE, cls=None, epochs=2, **options):
    torch.manual_seed(0)
    space = build_space(OmegaConf.create(space))
    if cls is None:
        strategy = build_strategy(OmegaConf.create(dict(name="random_ws", **options)))
    else:
        strategy = cls(**options)
    model = strategy.build_supernet(space, 4, 3)
    strategy.setup(space, model, OPTIM, epochs=epochs, steps_per_epoch=2,
                   runtime=Runtime(torch.device("cpu"), channels_last=False))
    return strategy, model


def batches(n, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 8, 8, generator=gen), torch.randint(0, 4, (4,), generator=gen)) for _ in range(n)]


def kept_ops(architecture, steps=4):
    """Per cell and node, the ops of its kept edges."""
    nodes, start = [], 0
    for node in range(steps):
        nodes.append([op for op in architecture[start:start + node + 2] if op is not None])
        start += node + 2
    return nodes


def test_sample_none_true_draws_none_as_one_op_in_eight_and_auto_never_in_the_darts_space():
    strategy, _ = make(sample_none=True)
    ops = []
    for _ in range(200):
        architecture = strategy.draw()
        for cell in ("normal", "reduce"):
            for node in kept_ops(architecture[cell]):
                assert len(node) == 2          # two distinct inputs per node, as their sample_arch
                ops.extend(node)
    # 3,200 kept edges, each op uniform over all 8 (theirs: np.random.choice(range(num_ops))): 400 `none`
    # expected, standard deviation 18.7; six of them either side is far outside chance.
    assert len(ops) == 3200 and 290 < ops.count(NONE) < 510
    assert set(ops) == set(range(8))
    auto, _ = make()
    assert all(NONE not in node for _ in range(50) for arch in [auto.draw()] for cell in arch.values()
               for node in kept_ops(cell))
    # NAS-Bench-201: the space's own draw already holds `none` (AutoDL-Projects' random_genotype).
    nb201, _ = make(NB201)
    assert any(0 in nb201.draw()["normal"] for _ in range(30))


def test_full_forward_runs_every_op_and_weight_decay_moves_the_unsampled_weights():
    """Their discrete=True forward multiplies unsampled ops by 0: those weights get a zero gradient, so SGD
    moves them by lr * weight_decay * w only, and their BN running statistics move too."""
    for forward in ("full", "sampled"):
        strategy, model = make(SMALL, forward=forward)
        # The first (normal) cell's edge 0 runs skip_connect: its sep_conv_3x3 is not sampled.
        architecture = strategy.draw()
        architecture["normal"][0] = 1
        first_cell, edge, op = model.cells[0], 0, 2
        conv = next(m for m in first_cell.edges[edge].ops[op].modules() if isinstance(m, torch.nn.Conv2d))
        bn = next(m for m in first_cell.edges[edge].ops[op].modules() if isinstance(m, torch.nn.BatchNorm2d))
        before, stats = conv.weight.detach().clone(), bn.running_mean.clone()
        strategy.weight_step(batches(1)[0], arch=strategy.sampled_weights(architecture, run_all=forward == "full"))
        if forward == "full":
            torch.testing.assert_close(conv.weight.detach(), before * (1 - 0.1 * 3e-4))
            assert not torch.equal(bn.running_mean, stats)
        else:
            assert torch.equal(conv.weight.detach(), before) and torch.equal(bn.running_mean, stats)


def test_score_takes_each_candidate_its_own_next_batches_in_eval_mode():
    strategy, model = make(eval_batches=2)
    data = batches(6)
    strategy.alpha_stream = iter(data)   # what step() keeps of the stream the engine hands it
    candidates = [strategy.draw() for _ in range(3)]
    running = [b.clone() for name, b in model.named_buffers() if "running" in name]
    accuracies, losses = strategy.score(candidates, 2)
    assert model.training    # the mode is restored after scoring
    model.eval()
    with torch.no_grad():
        for i, candidate in enumerate(candidates):
            arch = strategy.sampled_weights(candidate)
            pairs = [(model(x, arch), y) for x, y in data[2 * i:2 * i + 2]]
            expected_acc = sum((logits.argmax(1) == y).sum().item() for logits, y in pairs) / 8
            expected_loss = sum(torch.nn.functional.cross_entropy(logits, y).item() * 4 for logits, y in pairs) / 8
            assert accuracies[i] == pytest.approx(expected_acc) and losses[i] == pytest.approx(expected_loss, rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(running, [b for n, b in model.named_buffers() if "running" in n]))
    with pytest.raises(StopIteration):
        next(strategy.alpha_stream)   # exactly 3 x 2 batches taken


class Scripted(RandomWS):
    """Scores from a script: the first call returns the first pass, the second the re-scoring."""

    script: list = []

    def score(self, candidates, batches_each):
        accuracies, losses = self.script.pop(0)
        self.calls.append((len(candidates), batches_each))
        return accuracies, losses


def test_rank_rescores_the_best_and_the_rescored_winner_is_the_genotype():
    strategy, _ = make(cls=Scripted, num_candidates=5, eval_batches=10, top_k=2, rescore_batches=7)
    strategy.calls = []
    # First pass: 1 and 3 tie at 0.9, 3 has the lower loss: order 3, 1, 2, 0, 4. The re-scoring of [3, 1]
    # puts 1 ahead (0.8 against 0.6): the result is candidate 1, not the first pass's best, 3.
    Scripted.script = [([0.5, 0.9, 0.7, 0.9, 0.1], [1.0, 0.4, 0.5, 0.3, 2.0]), ([0.6, 0.8], [0.2, 0.9])]
    generator_state = strategy.generator.get_state()
    scores = strategy.rank()
    assert strategy.calls == [(5, 10), (2, 7)] and scores["first_order"] == [3, 1, 2, 0, 4]
    strategy.generator.set_state(generator_state)
    candidates = [strategy.draw() for _ in range(5)]
    assert strategy.ranked == [candidates[i] for i in (1, 3, 2, 0, 4)]
    assert strategy.genotype() == strategy.space.architecture_genotype(candidates[1])
    assert [w.active for w in strategy.eval_arch_weights().values()] == [candidates[1]["normal"],
                                                                       candidates[1]["reduce"]]
    # top_k=0 (AutoDL-Projects' NAS-Bench-201 RANDOM-NAS): the first pass decides; rescore_batches
    # null re-scores on an epoch's worth of batches (steps_per_epoch).
    plain, _ = make(cls=Scripted, num_candidates=3, top_k=0)
    plain.calls, Scripted.script = [], [([0.2, 0.3, 0.3], [0.1, 0.5, 0.4])]
    assert plain.rank()["first_order"] == [2, 1, 0] and plain.calls == [(3, 10)]
    epoch_worth, _ = make(cls=Scripted, num_candidates=3, top_k=1)
    epoch_worth.calls, Scripted.script = [], [([0.2, 0.3, 0.3], [0.1, 0.5, 0.4]), ([0.5], [0.5])]
    epoch_worth.rank()
    assert epoch_worth.calls == [(3, 10), (1, 2)]


def test_a_winner_with_none_is_ranked_but_the_genotype_is_the_best_expressible_one():
    strategy, _ = make(sample_none=True)
    with_none = next(a for a in iter(strategy.draw, None) if any(NONE in node for node in kept_ops(a["normal"])))
    without = next(a for a in iter(strategy.draw, None) if not any(NONE in node for cell in a.values()
                                                                 for node in kept_ops(cell)))
    with pytest.raises(DartsError, match="none"):
        strategy.space.architecture_genotype(with_none)
    strategy.ranked = [with_none, without]
    assert strategy.winner is with_none
    assert strategy.genotype() == strategy.space.architecture_genotype(without)
    assert strategy.eval_arch_weights()["normal"].active == without["normal"]
    strategy.ranked = [with_none]
    with pytest.raises(DartsError, match="sample_none"):
        strategy.genotype()


def test_ranking_runs_after_the_last_epoch_only_unless_rank_every_says_so():
    for rank_every, ranked_after_first in ((None, False), (1, True)):
        strategy, _ = make(num_candidates=2, eval_batches=1, top_k=1, rescore_batches=1, rank_every=rank_every,
                           forward="sampled")
        data = batches(12)
        stream = iter(data[1:])
        strategy.step(data[0], stream, epoch=0)
        strategy.end_epoch(0)
        assert bool(strategy.ranked) is ranked_after_first
        strategy.end_epoch(1)   # the last of 2 epochs always ranks
        assert len(strategy.ranked) == 2


@pytest.mark.parametrize("option, value, fragment", [
    ("forward", "some", "valid choices: full, sampled"), ("bn", "eval", "valid choices: running, batch"),
    ("sample_none", "yes", "valid choices: auto, True, False"), ("top_k", -1, "non-negative integer"),
    ("num_candidates", 0, "positive integer")])
def test_bad_options_name_the_valid_choices(option, value, fragment):
    with pytest.raises(DartsError, match=fragment):
        build_strategy(OmegaConf.create({"name": "random_ws", option: value}))
