"""The DARTS recurrent space: sizes, the cell's arithmetic, derivation, genotypes, the corpus path."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from darts.data.corpus import batchify, evaluation_windows, load_corpus, training_windows
from darts.errors import DartsError
from darts.spaces import SPACES, build_space
from darts.spaces.darts_rnn import DARTS_V1, DARTS_V2, RecurrentGenotype, derive_recurrent
from darts.spaces.darts_rnn.network import GenotypeCell
from darts.spaces.darts_rnn.supernet import SearchCell
from darts.spaces.mixed import EdgeWeights
from darts.strategies import build_strategy
from darts.viz import cell_to_dot

OPS = ["none", "tanh", "relu", "sigmoid", "identity"]
DROPOUTS = dict(dropout=0.75, dropouth=0.25, dropoutx=0.75, dropouti=0.2, dropoute=0.0)


def space(**overrides):
    cfg = dict(name="darts_rnn", primitives=OPS, steps=8, emsize=300, nhid=300, nhidlast=300, **DROPOUTS)
    cfg.update(overrides)
    return build_space(OmegaConf.create(cfg))


def lm_parameters(vocabulary, size, steps):
    """By hand: the embedding (V x E, shared with the tied decoder), the decoder bias (V), W0
    ((E + H) x 2H) and one (H x 2H) matrix per node, with E = H = size."""
    return vocabulary * size + vocabulary + (2 * size) * (2 * size) + steps * size * (2 * size)


def test_published_sizes_have_the_hand_counted_parameters():
    rnn = space()
    assert rnn.arch_shapes() == {"recurrent": (36, 5)}
    supernet = rnn.build_supernet(10000)
    assert sum(p.numel() for p in supernet.parameters()) == lm_parameters(10000, 300, 8) == 4_810_000
    train = OmegaConf.create(dict(network="ptb", emsize=850, nhid=850, nhidlast=850, **DROPOUTS))
    network = rnn.build_network(rnn.resolve_genotype("DARTS_V2"), train, 10000)
    # The paper's "23 M" for the PTB cell.
    assert sum(p.numel() for p in network.parameters()) == lm_parameters(10000, 850, 8) == 22_960_000
    assert network.decoder.weight is network.encoder.weight


def test_untied_sizes_are_refused():
    with pytest.raises(DartsError, match="emsize, nhid and nhidlast must be equal"):
        space(nhid=200).build_supernet(50)


def test_bad_ops_and_strategies_are_refused():
    with pytest.raises(DartsError, match="unknown recurrent op.*sep_conv_3x3.*valid choices: none, tanh"):
        space(primitives=["none", "sep_conv_3x3"])
    with pytest.raises(DartsError, match="max_skip_connects"):
        space().derive({"recurrent": torch.ones(36, 5)}, max_skip_connects=2)


def manual_first_state(x, h, W0, nhid):
    c0, h0 = (torch.cat([x, h], -1) @ W0).split(nhid, -1)
    return h + torch.sigmoid(c0) * (torch.tanh(h0) - h)


def highway(s, W, activation, nhid):
    c, h = (s @ W).split(nhid, -1)
    return s + torch.sigmoid(c) * (activation(h) - s)


def test_final_cell_computes_the_published_recurrence():
    genotype = RecurrentGenotype([("relu", 0), ("sigmoid", 0), ("identity", 1)], [1, 2, 3])
    torch.manual_seed(0)
    cell = GenotypeCell(ninp=3, nhid=2, dropouth=0.0, dropoutx=0.0, genotype=genotype).eval()
    x, h = torch.randn(4, 3), torch.randn(4, 2)
    s0 = manual_first_state(x, h, cell.W0, 2)
    s1 = highway(s0, cell.Ws[0], torch.relu, 2)
    s2 = highway(s0, cell.Ws[1], torch.sigmoid, 2)
    s3 = highway(s1, cell.Ws[2], lambda v: v, 2)
    torch.testing.assert_close(cell.step(x, h, None, None), (s1 + s2 + s3) / 3)


def test_search_cell_mixes_every_edge_and_op_by_its_weights():
    torch.manual_seed(0)
    cell = SearchCell(ninp=3, nhid=2, steps=2, dropouth=0.0, dropoutx=0.0, primitives=OPS).eval()
    # Eval-mode BN with fresh statistics divides by sqrt(1 + eps).
    bn = lambda v: v / (1 + cell.bn.eps) ** 0.5
    weights = torch.softmax(torch.randn(3, 5), -1)
    x, h = torch.randn(4, 3), torch.randn(4, 2)
    acts = [torch.tanh, torch.relu, torch.sigmoid, lambda v: v]
    s0 = bn(manual_first_state(x, h, cell.W0, 2))
    s1 = bn(sum(weights[0, k + 1] * highway(s0, cell.Ws[0], f, 2) for k, f in enumerate(acts)))
    s2 = bn(sum(weights[1 + j, k + 1] * highway(s, cell.Ws[1], f, 2)
                for j, s in enumerate([s0, s1]) for k, f in enumerate(acts)))
    got = cell.step(x, h, None, None, {"recurrent": EdgeWeights(weights)})
    torch.testing.assert_close(got, (s1 + s2) / 2)


def test_supernet_and_network_pass_the_hidden_state_in_and_out():
    rnn = space(emsize=4, nhid=4, nhidlast=4)
    supernet = rnn.build_supernet(7).eval()
    tokens = torch.randint(0, 7, (6, 3))
    arch = {"recurrent": EdgeWeights(torch.softmax(torch.randn(36, 5), -1))}
    whole = supernet(tokens, arch, supernet.init_hidden(3))
    first = supernet(tokens[:4], arch, supernet.init_hidden(3))
    second = supernet(tokens[4:], arch, first.hidden)
    assert whole.log_probs.shape == (6, 3, 7) and whole.raw.shape == (6, 3, 4)
    torch.testing.assert_close(torch.cat([first.log_probs, second.log_probs]), whole.log_probs)
    torch.testing.assert_close(whole.log_probs.exp().sum(-1), torch.ones(6, 3))


def test_derivation_on_hand_worked_weights():
    # 3 nodes: edges [1<-0], [2<-0, 2<-1], [3<-0, 3<-1, 3<-2]; columns none, tanh, relu, sigmoid, identity.
    weights = torch.tensor([
        [0.90, 0.02, 0.05, 0.01, 0.02],   # node 1: only input 0; `none` is ignored: relu
        [0.10, 0.20, 0.30, 0.10, 0.30],   # node 2 from 0: best 0.30, relu (first column of the tie)
        [0.00, 0.50, 0.20, 0.20, 0.10],   # node 2 from 1: best 0.50 (tanh) -> node 2 reads 1
        [0.00, 0.10, 0.10, 0.40, 0.40],   # node 3 from 0: 0.40, sigmoid
        [0.20, 0.10, 0.40, 0.10, 0.20],   # node 3 from 1: 0.40, relu; ties node 3's best: the earlier input wins
        [0.70, 0.10, 0.10, 0.05, 0.05],   # node 3 from 2: 0.10
    ])
    genotype = derive_recurrent(weights, OPS, 3)
    assert genotype == RecurrentGenotype([("relu", 0), ("tanh", 1), ("sigmoid", 0)], range(1, 4))


def test_derivation_recovers_darts_v2_from_weights_that_favour_it():
    rnn = space()
    weights = torch.full((36, 5), 0.1)
    edges = rnn.node_edges()
    for node, (op, source) in enumerate(DARTS_V2.recurrent):
        weights[edges[node][source], OPS.index(op)] = 0.5
        weights[edges[node][source], 0] = 0.9    # a stronger `none` changes nothing
    assert rnn.derive({"recurrent": weights}) == DARTS_V2


def test_community_string_json_and_published_names_round_trip(tmp_path):
    text = ("Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), "
            "('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))")
    assert str(DARTS_V2) == text
    rnn = space()
    for genotype in (DARTS_V1, DARTS_V2):
        assert rnn.parse_genotype(str(genotype)) == genotype
        assert rnn.parse_genotype(json.dumps(genotype.to_dict())) == genotype
        assert RecurrentGenotype.from_dict(json.loads(genotype.to_json())) == genotype
    assert rnn.resolve_genotype("DARTS_V1") == DARTS_V1 and rnn.resolve_genotype("DARTS") == DARTS_V2
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps({"genotype": DARTS_V1.to_dict()}))
    assert rnn.resolve_genotype(str(path)) == DARTS_V1
    assert rnn.resolve_genotype("random:3") == rnn.resolve_genotype("random:3")


@pytest.mark.parametrize("text, message", [
    ("Genotype(recurrent=[('sep_conv_3x3', 0)], concat=[1])", "unknown op 'sep_conv_3x3'"),
    ("Genotype(recurrent=[('relu', 1)], concat=[1])", "node 1 cannot read node 1"),
    ("Genotype(recurrent=[('relu', 0)], concat=[2])", "concat node 2"),
    ("Genotype(normal=[], normal_concat=[], reduce=[], reduce_concat=[])", "unknown field"),
    ("Genotype(recurrent=[('relu', 0)]", "malformed"),
])
def test_bad_genotype_strings_are_one_readable_error(text, message):
    with pytest.raises(DartsError, match=message):
        space().parse_genotype(text)


def test_cell_graph_draws_inputs_nodes_and_the_mean():
    graph = DARTS_V2.cell_graphs()["recurrent"]
    assert graph.inputs == ("x_{t}", "h_{t-1}") and graph.num_intermediate == 9 and graph.output == "h_{t}"
    assert graph.edges[:2] == ((0, 2, "tanh"), (1, 2, "tanh"))
    assert graph.edges[2:] == tuple((2 + j, 2 + i, op) for i, (op, j) in enumerate(DARTS_V2.recurrent, start=1))
    assert graph.output_sources == tuple(range(3, 11))
    assert "identity" in cell_to_dot(graph)


def test_only_darts_searches_the_recurrent_space():
    from darts.engine.language_search import check_language_search
    rnn = space()
    cfg = OmegaConf.create({"selection": {"name": "argmax"}, "early_stop": {"name": "none"}})
    check_language_search(cfg, rnn, build_strategy(OmegaConf.create({"name": "darts", "order": 2})))
    with pytest.raises(DartsError, match="strategy 'gdas' cannot search the darts_rnn space; valid choices: darts"):
        check_language_search(cfg, rnn, build_strategy(OmegaConf.create({"name": "gdas"})))
    with pytest.raises(DartsError, match="selection 'darts_pt' does not apply"):
        check_language_search(OmegaConf.merge(cfg, {"selection": {"name": "darts_pt"}}), rnn,
                              build_strategy(OmegaConf.create({"name": "darts"})))
    assert SPACES.get("darts_rnn").language_model


# -- the corpus ----------------------------------------------------------------------------------
def write_corpus(root, lines):
    root.mkdir(parents=True, exist_ok=True)
    for split, text in lines.items():
        (root / f"ptb.{split}.txt").write_text(text)


def test_corpus_appends_eos_and_numbers_words_in_order_of_appearance(tmp_path):
    write_corpus(tmp_path, {"train": "a b\nb c\n", "valid": "c d\n", "test": "a\n"})
    corpus = load_corpus(OmegaConf.create({"name": "ptb", "root": str(tmp_path)}))
    assert corpus.vocabulary == ["a", "b", "<eos>", "c", "d"]
    assert corpus.splits["train"].tolist() == [0, 1, 2, 1, 3, 2]
    assert corpus.splits["valid"].tolist() == [3, 4, 2] and corpus.splits["test"].tolist() == [0, 2]


def test_missing_corpus_files_name_the_layout(tmp_path):
    write_corpus(tmp_path, {"train": "a\n"})
    with pytest.raises(DartsError, match=r"missing .*ptb.valid.txt.*PTB layout.*nothing is downloaded"):
        load_corpus(OmegaConf.create({"name": "ptb", "root": str(tmp_path)}))


def test_batchify_makes_contiguous_streams_and_drops_the_tail():
    streams = batchify(torch.arange(11), 3)
    assert streams.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_training_windows_cover_the_split_with_the_published_lengths():
    windows = training_windows(rows=1000, bptt=35, seed=0, epoch=4)
    assert windows == training_windows(rows=1000, bptt=35, seed=0, epoch=4)
    assert windows != training_windows(rows=1000, bptt=35, seed=0, epoch=5)
    assert windows[0].start == 0 and all(b.start == a.start + a.drawn for a, b in zip(windows, windows[1:]))
    assert {w.drawn for w in windows} <= {35, 17} and windows[-1].start + windows[-1].length >= 998
    jittered = training_windows(rows=20000, bptt=35, seed=0, epoch=0, length_std=5.0)
    lengths = [w.drawn for w in jittered]
    assert min(lengths) >= 5 and max(lengths) <= 55 and 32 < sum(lengths) / len(lengths) < 35
    assert [(w.start, w.length) for w in evaluation_windows(10, 4)] == [(0, 4), (4, 4), (8, 1)]


def test_random_cells_are_one_input_per_node_and_build():
    rnn = space(emsize=4, nhid=4, nhidlast=4)
    generator = torch.Generator().manual_seed(0)
    genotypes = {str(rnn.architecture_genotype(rnn.random_architecture(generator))) for _ in range(5)}
    assert len(genotypes) > 1, "five random cells were all the same"
    train = OmegaConf.create(dict(network="auto", emsize=4, nhid=4, nhidlast=4, **DROPOUTS))
    for text in genotypes:
        genotype = rnn.parse_genotype(text)
        assert genotype.steps == 8 and genotype.ops() <= {"tanh", "relu", "sigmoid", "identity"}
        network = rnn.build_network(genotype, train, 6).eval()
        assert network(torch.randint(0, 6, (3, 2)), network.init_hidden(2)).log_probs.shape == (3, 2, 6)
