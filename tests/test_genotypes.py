import json

import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.spaces import DartsSpace, build_space
from darts.spaces.darts_cnn.genotype import (DARTS_V1, DARTS_V2, PC_DARTS, PRIMITIVES, Genotype, derive_from_weights,
                                             derive_genotype)

PUBLISHED = [DARTS_V1, DARTS_V2, PC_DARTS]


def darts_space(primitives=PRIMITIVES, steps=4) -> DartsSpace:
    space = build_space(OmegaConf.create(dict(name="darts", primitives=list(primitives), C=4, layers=3, steps=steps,
                                              multiplier=4, stem_multiplier=3)))
    assert isinstance(space, DartsSpace)
    return space


SPACE = darts_space()
parse_genotype, resolve_genotype = SPACE.parse_genotype, SPACE.resolve_genotype


def test_primitives_are_the_published_eight_in_order():
    assert PRIMITIVES == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                          "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


def test_published_darts_v2_cells():
    assert DARTS_V2.normal[:2] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert DARTS_V2.normal[-1] == ("dil_conv_3x3", 2)
    assert DARTS_V2.reduce == (("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                               ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1))
    assert DARTS_V1.reduce[-1] == ("avg_pool_3x3", 0) and PC_DARTS.reduce[0] == ("sep_conv_5x5", 1)


@pytest.mark.parametrize("genotype", PUBLISHED)
def test_json_and_string_round_trips(genotype):
    assert parse_genotype(genotype.to_json()) == genotype
    assert Genotype.from_dict(json.loads(json.dumps(genotype.to_dict()))) == genotype
    assert parse_genotype(str(genotype)) == genotype


def test_community_string_with_range_and_double_quotes():
    text = ('Genotype(normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), '
            '("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)], '
            'normal_concat=range(2, 6), reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), '
            '("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), '
            '("max_pool_3x3", 1)], reduce_concat=range(2, 6))')
    assert parse_genotype(text) == DARTS_V2


@pytest.mark.parametrize("text", [
    "Genotype(normal=[('sep_conv_3x3', 0)",                                     # truncated
    "Genotype(normal=[('conv_9x9', 0), ('sep_conv_3x3', 1)], normal_concat=[2], "
    "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=[2])",    # unknown op
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 2)], normal_concat=[2], "
    "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=[2])",    # node 0 cannot read node 0
    "Genotype(normal=[('none', 0), ('sep_conv_3x3', 1)], normal_concat=[2], "
    "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=[2])",    # none is never chosen
    "Genotype(normal=__import__('os').system('true'))",                           # not a literal
    "{\"normal\": [[\"sep_conv_3x3\", 0]]}",                                      # missing keys
    "{not json",
])
def test_invalid_genotypes_are_rejected(text):
    with pytest.raises(DartsError):
        parse_genotype(text)


def test_resolve_genotype_by_name_file_directory_and_string(tmp_path):
    assert resolve_genotype("DARTS_V2") == DARTS_V2
    (tmp_path / "genotype.json").write_text(json.dumps({"genotype": DARTS_V1.to_dict()}))
    assert resolve_genotype(str(tmp_path)) == DARTS_V1
    assert resolve_genotype(str(tmp_path / "genotype.json")) == DARTS_V1
    assert resolve_genotype(str(PC_DARTS)) == PC_DARTS
    with pytest.raises(DartsError, match="DARTS_V2"):
        resolve_genotype("DARTS_V3")
    assert resolve_genotype("DARTS") == DARTS_V2 and resolve_genotype("PC_DARTS") == PC_DARTS
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DartsError, match="holds no genotype.json"):
        resolve_genotype(str(empty))


def test_a_space_reads_only_genotypes_of_its_own_ops():
    subset = darts_space(primitives=["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"])
    assert subset.resolve_genotype("DARTS_V1") == DARTS_V1  # uses only ops in the subset
    with pytest.raises(DartsError, match="op\\(s\\) dil_conv_3x3 not in the configured op set"):
        darts_space(primitives=["max_pool_3x3", "skip_connect", "sep_conv_3x3"]).resolve_genotype("DARTS_V2")
    with pytest.raises(DartsError, match="sep_conv_5x5"):
        subset.parse_genotype(str(PC_DARTS))
    # No cross-space guessing: an NB201 cell is not a DARTS genotype.
    with pytest.raises(DartsError):
        SPACE.parse_genotype("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    with pytest.raises(DartsError):
        SPACE.parse_genotype_dict({"nb201": "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"})


def one_hot_alphas(choices, steps=4, primitives=PRIMITIVES, strong=5.0):
    """alphas (edges, ops) that are zero except `strong` at (edge, op) for each given choice."""
    edges = sum(node + 2 for node in range(steps))
    alphas = torch.zeros(edges, len(primitives))
    for edge, op, value in choices:
        alphas[edge, primitives.index(op)] = value
    return alphas


def test_derivation_picks_two_strongest_edges_and_ignores_none():
    # Node 0 has edges 0, 1; node 1 edges 2-4; node 2 edges 5-8; node 3 edges 9-13.
    alphas = one_hot_alphas([
        (0, "sep_conv_3x3", 3.0), (1, "skip_connect", 2.0),
        (2, "none", 9.0), (2, "max_pool_3x3", 0.5),     # none dominates edge 2: it must not count
        (3, "dil_conv_5x5", 1.0), (4, "avg_pool_3x3", 2.0),
        (5, "sep_conv_5x5", 4.0), (8, "dil_conv_3x3", 4.5),
        (13, "sep_conv_3x3", 2.0), (10, "skip_connect", 1.5),
    ])
    genotype = derive_genotype(alphas, alphas)
    assert genotype.normal == (
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("avg_pool_3x3", 2), ("dil_conv_5x5", 1),
        ("dil_conv_3x3", 3), ("sep_conv_5x5", 0),
        ("sep_conv_3x3", 4), ("skip_connect", 1),
    )
    assert genotype.normal_concat == (2, 3, 4, 5)


def test_derivation_edge_where_none_is_strongest_uses_its_best_real_op():
    # Edge 2 has `none` at 9 but max_pool at 3: under softmax its best non-none weight is tiny,
    # so it loses to edges 3 and 4 whose best ops are weaker in raw alpha but not drowned by `none`.
    alphas = one_hot_alphas([(2, "none", 9.0), (2, "max_pool_3x3", 3.0), (3, "sep_conv_3x3", 1.0),
                             (4, "sep_conv_5x5", 1.0)])
    node1 = derive_genotype(alphas, alphas).normal[2:4]
    assert node1 == (("sep_conv_3x3", 1), ("sep_conv_5x5", 2))  # equal strengths: the earlier edge first
    # A none-dominated edge ranks after a uniform one, yet keeps its own best non-none op.
    alphas = one_hot_alphas([(0, "none", 9.0), (0, "dil_conv_3x3", 1.0)], steps=1)
    assert derive_genotype(alphas, alphas, steps=1).normal == (("max_pool_3x3", 1), ("dil_conv_3x3", 0))


def test_derivation_ties_go_to_earlier_edge_and_lower_op():
    alphas = torch.zeros(14, 8)  # every weight equal: first two edges, first non-none op
    genotype = derive_genotype(alphas, alphas)
    assert genotype.normal == tuple(pair for node in range(4)
                                    for pair in (("max_pool_3x3", 0), ("max_pool_3x3", 1)))
    alphas[4, PRIMITIVES.index("sep_conv_3x3")] = 1.0
    alphas[4, PRIMITIVES.index("dil_conv_3x3")] = 1.0  # tie between ops on one edge: the lower index
    assert derive_genotype(alphas, alphas).normal[2:4] == (("sep_conv_3x3", 2), ("max_pool_3x3", 0))


def test_derivation_matches_the_rule_on_random_alphas():
    torch.manual_seed(0)
    alphas = torch.randn(14, 8)
    weights = torch.softmax(alphas, -1)
    genotype = derive_genotype(alphas, alphas)
    start = 0
    for node in range(4):
        rows = weights[start:start + node + 2, 1:]  # drop `none`
        strength = rows.max(1).values
        best_edges = strength.argsort(descending=True, stable=True)[:2].tolist()
        expected = [(PRIMITIVES[1 + rows[j].argmax().item()], j) for j in best_edges]
        assert list(genotype.normal[2 * node:2 * node + 2]) == expected
        start += node + 2


def test_space_derivation_is_the_published_rule_on_the_weights_it_is_given():
    # derive_genotype = softmax, then the rule; a space derives from weights as given (PC-DARTS scales
    # each edge's row by its normalised beta before): scaling the rows down can change the edges kept.
    torch.manual_seed(1)
    alphas = {"normal": torch.randn(14, 8), "reduce": torch.randn(14, 8)}
    weights = {cell: torch.softmax(a, -1) for cell, a in alphas.items()}
    assert SPACE.derive(weights) == derive_genotype(alphas["normal"], alphas["reduce"])
    node0_first = SPACE.derive(weights).normal[0][1]
    scales = torch.ones(14, 1)
    scales[node0_first] = 1e-3  # the edge ranked first on node 0 now ranks second
    scaled = SPACE.derive({cell: w * scales for cell, w in weights.items()})
    assert [source for _, source in scaled.normal[:2]] == [1 - node0_first, node0_first]
    assert scaled.normal[2:] == SPACE.derive(weights).normal[2:]
    with pytest.raises(DartsError, match="do not fit 4 steps"):
        derive_from_weights({"normal": torch.ones(5, 8), "reduce": torch.ones(5, 8)}, PRIMITIVES, 4)


def test_derivation_without_none_in_the_op_set():
    ops = ["skip_connect", "sep_conv_3x3"]
    alphas = torch.zeros(5, 2)
    alphas[1, 1] = 1.0
    genotype = derive_genotype(alphas, alphas, primitives=ops, steps=2)
    assert genotype.normal[:2] == (("sep_conv_3x3", 1), ("skip_connect", 0))
    with pytest.raises(DartsError):
        derive_genotype(torch.zeros(14, 3), torch.zeros(14, 3), primitives=ops, steps=4)
