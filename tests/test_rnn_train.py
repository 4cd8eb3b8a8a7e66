"""The recurrent search and final training end to end on a tiny generated corpus in the PTB layout:
run directories, exact resume, the second-order hypergradient, the switch to ASGD, the export."""
import math
import random

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call

from darts import export
from darts.checkpoint import CHECKPOINT_NAME
from darts.data.corpus import load_corpus
from darts.engine import run_final, run_search
from darts.engine.language import evaluate_nll, streams
from darts.engine.language_final import should_switch
from darts.errors import DartsError
from darts.preemption import Preempted
from darts.runtime import Runtime
from darts.spaces import EdgeWeights, build_space
from darts.spaces.language import HiddenCarry, TextWindow
from darts.strategies import STRATEGIES, build_strategy
from darts.strategies.darts import DARTS
from helpers import compose_config, read_json, run_script
from test_preemption import signalling

TINY_LM = ["space.emsize=8", "space.nhid=8", "space.nhidlast=8", "search.batch_size=4", "search.eval_batch_size=4",
           "search.bptt=6", "search.max_steps_per_epoch=6", "search.log_every=0", "search.epochs=2"]
TINY_FINAL = ["train.emsize=8", "train.nhid=8", "train.nhidlast=8", "train.batch_size=4", "train.eval_batch_size=4",
              "train.test_batch_size=2", "train.bptt=6", "train.max_steps_per_epoch=8", "train.log_every=0",
              "train.epochs=4", "train.asgd.nonmono=1"]


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny recurrences here are a chain of small kernels: a second thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def corpus(tmp_path):
    """A 31-word corpus in the PTB layout with a learnable pattern (each word mostly followed by the next)."""
    root = tmp_path / "corpus"
    root.mkdir()
    rng = random.Random(0)

    def sentence():
        word, words = rng.randrange(30), []
        for _ in range(rng.randint(4, 10)):
            words.append(f"w{word}")
            word = (word + 1) % 30 if rng.random() < 0.8 else rng.randrange(30)
        return " ".join(words)

    for split, lines in (("train", 120), ("valid", 40), ("test", 30)):
        (root / f"ptb.{split}.txt").write_text("\n".join(sentence() for _ in range(lines)) + "\n")
    return root


def search_config(corpus, *overrides):
    return compose_config("search", ["experiment=darts_ptb", f"dataset.root={corpus}", *TINY_LM, *overrides])


def final_config(corpus, *overrides):
    return compose_config("final", ["experiment=darts_ptb_final", f"dataset.root={corpus}", *TINY_FINAL, *overrides])


def test_smoke_search_writes_a_complete_run_directory(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # the script's process: see one_thread
    run_dir = tmp_path / "run"
    result = run_script("train_search.py", "experiment=darts_ptb", f"dataset.root={corpus}", *TINY_LM,
                        f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    results = read_json(run_dir / "results.json")
    rnn = build_space(search_config(corpus).space)
    genotype = rnn.parse_genotype((run_dir / "genotype.json").read_text())
    assert genotype.steps == 8 and results["genotype_string"] == str(genotype)
    assert len(results["alphas"]["alphas_recurrent"]) == 36 and len(results["alphas"]["alphas_recurrent"][0]) == 5
    assert results["valid_ppl"] == pytest.approx(math.exp(results["valid_loss"]))
    assert 1 < results["valid_ppl"] < 10 * 31 and results["vocabulary_size"] == 31
    assert [record["epoch"] for record in results["history"]] == [0, 1]
    assert sorted(p.name for p in (run_dir / "genotypes").iterdir()) == ["epoch_000.json", "epoch_001.json"]
    assert (run_dir / "cells" / "recurrent.dot").is_file() and (run_dir / CHECKPOINT_NAME).is_file()
    assert any((run_dir / "tb").glob("events.out.tfevents*"))


@pytest.mark.parametrize("order", [1, 2])
def test_search_stopped_mid_epoch_resumes_bit_for_bit(corpus, tmp_path, order):
    extra = [f"strategy.order={order}"]
    full = run_search(search_config(corpus, *extra), tmp_path / "full")
    # 6 steps an epoch: the 9th is the second epoch's third; the hidden states travel in the checkpoint.
    with STRATEGIES.temporarily("signalling_darts", signalling(DARTS, "step", 9)):
        with pytest.raises(Preempted):
            run_search(search_config(corpus, *extra, "strategy.name=signalling_darts"), tmp_path / "cut")
    state = torch.load(tmp_path / "cut" / CHECKPOINT_NAME, weights_only=False)
    assert state["interrupted"]["epoch"] == 1 and state["interrupted"]["step"] == 3
    assert state["task"]["hidden"]["weights"] is not None
    resumed = run_search(search_config(corpus, *extra, "resume=true"), tmp_path / "cut")
    assert resumed["alphas"] == full["alphas"], "alphas must match bit for bit"
    assert resumed["genotype"] == full["genotype"]
    for key in ("loss", "alpha_loss", "valid_loss"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in full["history"]], key


def test_search_learns_and_moves_the_architecture(corpus, tmp_path):
    results = run_search(search_config(corpus, "search.epochs=1", "search.max_steps_per_epoch=null",
                                       "optim.weights.lr=2.0", "optim.weights.lr_min=2.0"), tmp_path / "run")
    record = results["history"][0]
    assert record["valid_ppl"] < 31   # better than uniform over the vocabulary
    alphas = torch.tensor(results["alphas"]["alphas_recurrent"])
    assert alphas.abs().max() > 1e-2  # moved from its 1e-3 initialisation


# -- the second-order hypergradient ---------------------------------------------------------------
TINY_SPACE = dict(name="darts_rnn", primitives=["none", "tanh", "sigmoid", "identity"], steps=2, emsize=3, nhid=3,
                  nhidlast=3, dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0)
OPTIM = OmegaConf.create(dict(weights=dict(lr=0.5, lr_min=0.5, momentum=0.0, weight_decay=1e-2, grad_clip=0.25),
                              alphas=dict(lr=3e-3, betas=[0.9, 0.999], weight_decay=1e-3)))


def second_order_strategy(hessian, clip):
    torch.manual_seed(0)
    rnn = build_space(OmegaConf.create(TINY_SPACE))
    strategy = build_strategy(OmegaConf.create(dict(name="darts", order=2, hessian=hessian)))
    model = strategy.build_supernet(rnn, 5, 0).double()
    strategy.setup(rnn, model, OPTIM, epochs=1, steps_per_epoch=1, runtime=Runtime(torch.device("cpu"),
                                                                                     channels_last=False))
    strategy.set_objective(rnn.search_objective(OmegaConf.create({"tar": 1e-3}), OmegaConf.merge(
        OPTIM, {"weights": {"grad_clip": clip}})))
    strategy.arch.double()
    with torch.no_grad():
        for alpha in strategy.arch_parameters():
            alpha.normal_(0, 1)
    return strategy, model


def windows():
    gen = torch.Generator().manual_seed(1)
    make = lambda: TextWindow(torch.randint(0, 5, (4, 3), generator=gen), torch.randint(0, 5, (12,), generator=gen),
                              torch.randn(3, 3, generator=gen, dtype=torch.float64), HiddenCarry())
    return make(), make()


def nll(model, weights, window, alphas):
    arch = {"recurrent": EdgeWeights(torch.softmax(alphas, -1))}
    out = functional_call(model, weights, (window.inputs, arch, window.hidden))
    return F.nll_loss(out.log_probs.reshape(-1, 5), window.targets)


def autograd_hypergradient(model, alphas, group, clip, train, val):
    """d/d alpha of L_val(w - xi (c grad_w L_train + lambda w), alpha) with the clip factor c held
    constant, the implicit term scaled by the clip factor of grad_w' L_val (rnn/architect.py lines 32-80)."""
    xi, lam = group["lr"], group["weight_decay"]
    weights = dict(model.named_parameters())
    grads = torch.autograd.grad(nll(model, weights, train, alphas), list(weights.values()), create_graph=True)
    norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads))
    c = min(1.0, clip / (float(norm) + 1e-6))
    unrolled = {name: w.detach() - xi * (c * g + lam * w.detach()) for (name, w), g in zip(weights.items(), grads)}
    loss_val = nll(model, unrolled, val, alphas)
    total = torch.autograd.grad(loss_val, alphas, retain_graph=True)[0]
    frozen = {name: w.detach().requires_grad_() for name, w in unrolled.items()}
    direct = torch.autograd.grad(nll(model, frozen, val, alphas), alphas)[0]
    v = torch.autograd.grad(nll(model, frozen, val, alphas.detach()), list(frozen.values()))
    v_norm = torch.sqrt(sum((g ** 2).sum() for g in v))
    v_clip = min(1.0, clip / (float(v_norm) + 1e-6))
    return direct + v_clip * (total - direct), direct, c, v_clip


@pytest.mark.parametrize("hessian", ["finite_difference", "exact"])
@pytest.mark.parametrize("clip", [1e6, 0.2])
def test_second_order_hypergradient_matches_autograd(hessian, clip):
    strategy, model = second_order_strategy(hessian, clip)
    alphas = strategy.arch.alphas()["recurrent"]
    train, val = windows()
    weights_before = [w.detach().clone() for w in strategy.weights]
    expected, first_order, c, v_clip = autograd_hypergradient(model, alphas, strategy.w_optimizer.param_groups[0],
                                                              clip, train, val)
    (got,), _, _ = strategy.unrolled_alpha_gradient(train, val)
    if clip < 1:
        assert c < 1 and v_clip < 1, "the small clip must bind on both gradients"
    second_order_term = expected - first_order
    assert second_order_term.norm() > 0.05 * expected.norm()
    tolerance = 1e-9 if hessian == "exact" else 5e-3
    assert (got - expected).norm() <= tolerance * second_order_term.norm()
    for before, after in zip(weights_before, strategy.weights):
        assert torch.equal(before, after), "the virtual step must leave the weights exactly as they were"
    assert val.carry.state is not None and train.carry.state is not None


# -- final training -----------------------------------------------------------------------------
def test_switch_to_asgd_follows_the_published_rule():
    assert not should_switch([5.0, 4.0, 3.0, 3.5], nonmono=5)          # too few epochs yet
    # The newest against the best of all but the 5 before it: min(5.0, 4.0) = 4.0.
    assert should_switch([5.0, 4.0, 3.0, 3.5, 3.4, 3.3, 3.2, 4.1], nonmono=5)
    assert not should_switch([5.0, 4.0, 3.0, 3.5, 3.4, 3.3, 3.2, 3.9], nonmono=5)
    assert not should_switch([3.0, 2.0, 2.5], nonmono=1)              # 2.5 beats 3.0
    assert should_switch([2.0, 3.0, 2.5], nonmono=1)                  # 2.5 is worse than 2.0


def test_final_training_switches_to_asgd_exports_and_scores_valid_and_test(corpus, tmp_path):
    run_dir = tmp_path / "final"
    results = run_final(final_config(corpus, "train.optimizer.lr=60.0"), run_dir)
    kinds = [record["optimizer"] for record in results["history"]]
    assert kinds[0] == "sgd" and kinds[-1] == "asgd", kinds
    assert results["asgd_from_epoch"] == kinds.index("asgd")
    assert results["valid_ppl"] == pytest.approx(math.exp(results["valid_loss"]))
    assert results["test_ppl"] > 1 and round(results["params_m"] * 1e6) == 31 * 8 + 31 + 16 * 16 + 8 * 8 * 16
    best = min(record["valid_loss"] for record in results["history"])
    assert results["valid_loss"] == pytest.approx(best, rel=1e-6), "the exported weights are the best epoch's"

    network = export.load(run_dir / "model.pt")
    assert network.genotype == build_space(final_config(corpus).space).resolve_genotype("DARTS_V2")
    corpus_data = load_corpus(final_config(corpus).dataset)
    test_loss = evaluate_nll(network, streams(corpus_data.splits["test"], 2, "cpu"), 6, network.init_hidden)
    assert test_loss == pytest.approx(results["test_loss"], rel=1e-9)


def test_final_training_resumes_exactly_across_the_switch(corpus, tmp_path):
    overrides = ["train.optimizer.lr=60.0"]
    full = run_final(final_config(corpus, *overrides), tmp_path / "full")
    run_final(final_config(corpus, *overrides, "train.epochs=3"), tmp_path / "cut")
    resumed = run_final(final_config(corpus, *overrides, "resume=true"), tmp_path / "cut")
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["test_loss"] == full["test_loss"] and resumed["valid_loss"] == full["valid_loss"]


def test_bad_language_model_runs_are_one_readable_error(corpus, tmp_path):
    with pytest.raises(DartsError, match=r"missing .*ptb.train.txt.*PTB layout"):
        run_search(search_config(tmp_path / "nowhere"), tmp_path / "a")
    with pytest.raises(DartsError, match="dataset 'synthetic' is not one: use dataset=ptb"):
        run_search(search_config(corpus, "dataset=synthetic"), tmp_path / "b")
    with pytest.raises(DartsError, match="strategy 'pcdarts' cannot search the darts_rnn space"):
        run_search(search_config(corpus, "strategy=pcdarts"), tmp_path / "c")
    with pytest.raises(DartsError, match="unknown genotype 'NASNet'"):
        run_final(final_config(corpus, "genotype=NASNet"), tmp_path / "d")
