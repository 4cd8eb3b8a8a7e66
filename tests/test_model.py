"""The DARTS final networks (darts.spaces.darts_cnn.network): published sizes, the forward contract,
the auxiliary heads and drop path. Export and load are tested in test_export.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.errors import DartsError
from darts.export import count_parameters
from darts.spaces.darts_cnn.genotype import DARTS_V2
from darts.spaces.darts_cnn.auxiliary import AuxiliaryHeadCIFAR
from darts.spaces.darts_cnn.network import Cell, NetworkCIFAR, NetworkImageNet, drop_path


def small_cifar(auxiliary=True, genotype=DARTS_V2, C=8, layers=5, **kwargs):
    torch.manual_seed(0)
    return NetworkCIFAR(C, 10, layers, auxiliary, genotype, **kwargs)


# ---------------------------------------------------------------------------
# Size
# ---------------------------------------------------------------------------
def test_darts_v2_has_the_published_parameter_count():
    net = NetworkCIFAR(36, 10, 20, False, DARTS_V2)
    assert count_parameters(net) == 3_349_342
    assert count_parameters(net, exclude_auxiliary=False) == 3_349_342


def test_auxiliary_head_adds_exactly_its_own_parameters():
    net = NetworkCIFAR(36, 10, 20, True, DARTS_V2)
    # Worked out by hand: the head reads 4 nodes x (36 * 2 * 2) = 576 channels.
    C_aux = 4 * 36 * 4
    head = (C_aux * 128            # 1x1 conv
            + 2 * 128              # BN
            + 128 * 768 * 2 * 2    # 2x2 conv
            + 2 * 768              # BN
            + 768 * 10 + 10)       # linear
    assert count_parameters(net) == 3_349_342
    assert count_parameters(net, exclude_auxiliary=False) == 3_349_342 + head


# ---------------------------------------------------------------------------
# Shapes and the forward contract
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("auxiliary", [True, False])
def test_cifar_forward_contract(auxiliary):
    net = small_cifar(auxiliary=auxiliary, C=8, layers=8)
    x = torch.randn(2, 3, 32, 32)

    net.train()
    logits, logits_aux = net(x)
    assert logits.shape == (2, 10)
    if auxiliary:
        assert logits_aux.shape == (2, 10)
    else:
        assert logits_aux is None

    net.eval()
    with torch.no_grad():
        eval_logits = net(x)
    assert isinstance(eval_logits, torch.Tensor) and eval_logits.shape == (2, 10)


def test_cifar_one_channel_28x28_reaches_the_auxiliary_head_at_7x7():
    net = small_cifar(auxiliary=True, C=8, layers=8, in_channels=1)
    seen = []
    net.auxiliary_head.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[-2:]))
    net.train()
    logits, logits_aux = net(torch.randn(2, 1, 28, 28))
    assert seen == [(7, 7)]
    assert logits.shape == (2, 10) and logits_aux.shape == (2, 10)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_cifar_auxiliary_head_is_the_published_one_at_8x8():
    torch.manual_seed(0)
    head = AuxiliaryHeadCIFAR(16, 10).eval()
    x = torch.randn(2, 16, 8, 8)
    published_pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
    expected = head.classifier(torch.flatten(head.features(published_pool(F.relu(x))), 1))
    assert torch.equal(head(x), expected)


def test_imagenet_at_224():
    torch.manual_seed(0)
    net = NetworkImageNet(8, 10, 5, True, DARTS_V2)
    seen = []
    net.auxiliary_head.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[-2:]))
    x = torch.randn(1, 3, 224, 224)

    net.eval()
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (1, 10)
    assert seen == []  # no auxiliary head in eval mode

    net.train()
    logits, logits_aux = net(x)
    assert logits.shape == (1, 10) and logits_aux.shape == (1, 10)
    assert seen == [(7, 7)]  # after the second reduction: 224 -> 28 -> 14 -> 7


def test_invalid_sizes_are_readable_errors():
    with pytest.raises(DartsError, match="even C"):
        NetworkImageNet(7, 10, 5, False, DARTS_V2)
    with pytest.raises(DartsError, match="layers"):
        NetworkCIFAR(8, 10, 0, False, DARTS_V2)


# ---------------------------------------------------------------------------
# Drop path
# ---------------------------------------------------------------------------
def test_drop_path_zeroes_whole_samples_and_scales_the_kept_ones_exactly():
    x = torch.randn(64, 3, 4, 4)
    drop_prob = 0.2
    out = drop_path(x, drop_prob, generator=torch.Generator().manual_seed(0))
    # The same generator state gives the same per-sample mask.
    mask = torch.empty(64, 1, 1, 1).bernoulli_(1 - drop_prob, generator=torch.Generator().manual_seed(0))
    kept = mask.flatten().bool()
    assert 0 < kept.sum() < 64
    assert torch.equal(out[kept], x[kept] / (1 - drop_prob))
    assert torch.equal(out[~kept], torch.zeros_like(out[~kept]))


def test_drop_path_edge_probabilities():
    x = torch.randn(4, 2, 3, 3)
    assert drop_path(x, 0.0) is x
    assert torch.equal(drop_path(x, 1.0), torch.zeros_like(x))
    with pytest.raises(DartsError):
        drop_path(x, 1.5)


def test_drop_path_never_touches_identity_edges():
    torch.manual_seed(0)
    cell = Cell(DARTS_V2, 12, 12, 6, reduction=False, reduction_prev=False).train()
    s0, s1 = torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8)
    out = cell(s0, s1, drop_prob=1.0)
    # DARTS_V2 normal: nodes 0 and 1 are two sep convs each (all dropped -> 0),
    # node 2 = sep conv (dropped) + skip from input 0, node 3 = skip from input 0 + dil conv of node 0 (dropped).
    pre0 = cell.preprocess0(s0)
    zeros = torch.zeros_like(pre0)
    assert torch.equal(out, torch.cat([zeros, zeros, pre0, pre0], dim=1))


def is_identity_edge(genotype, reduction, edge):
    """By hand: a skip_connect is the identity unless it reads a cell input of a reduction cell
    (stride 2, a factorized reduce)."""
    op_name, node_input = (genotype.reduce if reduction else genotype.normal)[edge]
    return op_name == "skip_connect" and not (reduction and node_input < 2)


@pytest.mark.parametrize("reduction, expected_drops", [(False, 6), (True, 5)])
def test_drop_path_is_applied_to_every_non_identity_edge(reduction, expected_drops):
    """The cell's output rebuilt from each op's own output (forward hooks) and drop path's masks
    drawn in edge order from the same generator: every non-identity edge, and only those, is
    dropped with the cell's probability, in training mode only."""
    torch.manual_seed(0)
    cell = Cell(DARTS_V2, 8, 8, 4, reduction=reduction, reduction_prev=False).train()
    outputs = {}
    for edge, op in enumerate(cell.ops):
        op.register_forward_hook(lambda module, inputs, out, edge=edge: outputs.__setitem__(edge, out.detach()))
    # Normal: 8 edges, 2 skip_connect. Reduce: 8 edges, 3 skip_connect from node 2 (stride 1 -> identity).
    dropped = [edge for edge in range(len(cell.ops)) if not is_identity_edge(DARTS_V2, reduction, edge)]
    assert len(dropped) == expected_drops

    def expected_output(drop_prob, seed):
        generator = torch.Generator().manual_seed(seed)
        nodes = []
        for node in range(cell.steps):
            total = 0
            for edge in (2 * node, 2 * node + 1):
                h = outputs[edge]
                if edge in dropped and drop_prob > 0:
                    mask = torch.empty(h.shape[0], 1, 1, 1).bernoulli_(1 - drop_prob, generator=generator)
                    h = h / (1 - drop_prob) * mask
                total = total + h
            nodes.append(total)
        states = [None, None, *nodes]
        return torch.cat([states[index] for index in cell.concat], dim=1)

    s = torch.randn(16, 8, 8, 8)
    with torch.no_grad():
        out = cell(s, s, drop_prob=0.3, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, expected_output(0.3, 0), rtol=1e-6, atol=1e-6)
        assert not torch.allclose(out, expected_output(0.0, 0))   # some samples were dropped
        out = cell.eval()(s, s, drop_prob=0.3, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, expected_output(0.0, 0), rtol=1e-6, atol=1e-6)


def test_drop_path_is_off_in_eval_mode():
    net = small_cifar(auxiliary=False, C=8, layers=3)
    x = torch.randn(2, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        net.drop_path_prob = 0.0
        reference = net(x)
        net.drop_path_prob = 0.5
        assert torch.equal(net(x), reference)
        # Sanity check that the probability matters at all: in training mode it changes the output.
        net.train()
        torch.manual_seed(1)
        with_drop, _ = net(x)
        net.drop_path_prob = 0.0
        without_drop, _ = net(x)
    assert not torch.allclose(with_drop, without_drop)
