"""Tests for darts.model: the discrete networks, drop path, export/load, compatibility checks."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import darts.model as model_module
from darts.errors import DartsError
from darts.genotypes import DARTS_V1, DARTS_V2, Genotype
from darts.model import (
    AuxiliaryHeadCIFAR,
    Cell,
    NetworkCIFAR,
    NetworkImageNet,
    check_compatible,
    count_parameters,
    drop_path,
    load,
    save,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.parametrize("reduction, expected_drops", [(False, 6), (True, 5)])
def test_drop_path_is_applied_to_every_non_identity_edge(monkeypatch, reduction, expected_drops):
    calls = []

    def recording_drop_path(x, drop_prob, generator=None):
        calls.append(drop_prob)
        return x

    monkeypatch.setattr(model_module, "drop_path", recording_drop_path)
    cell = Cell(DARTS_V2, 8, 8, 4, reduction=reduction, reduction_prev=False).train()
    s = torch.randn(2, 8, 8, 8)
    cell(s, s, drop_prob=0.3)
    # Normal: 8 edges, 2 skip_connect. Reduce: 8 edges, 3 skip_connect from node 2 (stride 1 -> identity).
    assert calls == [0.3] * expected_drops
    calls.clear()
    cell.eval()(s, s, drop_prob=0.3)
    assert calls == []


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


# ---------------------------------------------------------------------------
# Export / load
# ---------------------------------------------------------------------------
FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from darts.model import load

    model = load(sys.argv[1])
    assert not model.training, "load must return an eval-mode network"
    x = torch.load(sys.argv[2], weights_only=True)
    with torch.no_grad():
        torch.save(model(x), sys.argv[3])
    print(type(model).__name__, model.config)
""")


def trained_network():
    net = small_cifar(auxiliary=True, C=8, layers=5, drop_path_prob=0.2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    net.train()
    logits, logits_aux = net(x)
    loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(logits_aux, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return net.eval()


def test_export_loads_in_a_fresh_process_with_the_same_logits(tmp_path):
    net = trained_network()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = net(x)
    export_path = tmp_path / "model.pt"
    save(net, export_path)
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]  # no temporary file left behind
    payload = torch.load(export_path, weights_only=True)
    assert payload["class_name"] == "NetworkCIFAR"
    assert payload["genotype"] == DARTS_V2.to_dict()
    assert payload["config"] == {"C": 8, "num_classes": 10, "layers": 5, "auxiliary": True, "in_channels": 3}

    torch.save(x, tmp_path / "input.pt")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(export_path), str(tmp_path / "input.pt"),
         str(tmp_path / "logits.pt")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NetworkCIFAR")
    logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert torch.allclose(logits, expected, atol=1e-6)


def test_imagenet_export_round_trip(tmp_path):
    torch.manual_seed(0)
    net = NetworkImageNet(8, 10, 3, False, DARTS_V1).eval()
    save(net, tmp_path / "imagenet.pt")
    loaded = load(tmp_path / "imagenet.pt")
    assert type(loaded) is NetworkImageNet and loaded.genotype == DARTS_V1
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_load_missing_file(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(DartsError, match="does not exist") as info:
        load(path)
    assert str(path) in str(info.value)


class NotPlainData:
    pass


def test_load_truncated_or_garbage_file(tmp_path):
    good = tmp_path / "good.pt"
    save(small_cifar(auxiliary=False, C=4, layers=3), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    # A pickled object of an arbitrary class is refused by weights_only loading.
    with_object = tmp_path / "object.pt"
    torch.save({"model": NotPlainData()}, with_object)
    for path in (truncated, garbage, with_object):
        with pytest.raises(DartsError, match="corrupt") as info:
            load(path)
        assert str(path) in str(info.value)


def test_load_a_torch_file_that_is_not_a_model_export(tmp_path):
    plain_state = tmp_path / "state_dict.pt"
    torch.save(small_cifar(auxiliary=False, C=4, layers=3).state_dict(), plain_state)
    with pytest.raises(DartsError, match="not a darts model export") as info:
        load(plain_state)
    assert str(plain_state) in str(info.value)


def test_load_export_whose_weights_do_not_fit_its_config(tmp_path):
    path = tmp_path / "tampered.pt"
    save(small_cifar(auxiliary=False, C=4, layers=3), path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["C"] = 6
    torch.save(payload, path)
    with pytest.raises(DartsError, match="different network") as info:
        load(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------
# Checkpoint compatibility
# ---------------------------------------------------------------------------
def test_check_compatible_accepts_its_own_state():
    net = small_cifar(auxiliary=True, C=4, layers=3)
    check_compatible(net, net.state_dict(), genotype=DARTS_V2.to_dict())


def test_check_compatible_rejects_another_genotype():
    net = small_cifar(auxiliary=False, C=4, layers=3, genotype=DARTS_V2)
    other = small_cifar(auxiliary=False, C=4, layers=3, genotype=DARTS_V1)
    with pytest.raises(DartsError, match=r"different network: \d+ missing keys, \d+ unexpected"):
        check_compatible(net, other.state_dict())


def test_check_compatible_rejects_another_size():
    net = small_cifar(auxiliary=False, C=4, layers=3)
    wider = small_cifar(auxiliary=False, C=6, layers=3)
    with pytest.raises(DartsError, match=r"first shape mismatch stem\.0\.weight \(18x3x3x3 .* vs 12x3x3x3"):
        check_compatible(net, wider.state_dict())
    deeper = small_cifar(auxiliary=False, C=4, layers=4)
    with pytest.raises(DartsError, match="different network"):
        check_compatible(net, deeper.state_dict())


def test_check_compatible_uses_the_recorded_genotype_when_keys_cannot_tell():
    # Swapping which input each sep conv of node 0 reads keeps every key and shape.
    normal = list(DARTS_V2.normal)
    normal[0], normal[1] = normal[1], normal[0]
    swapped = Genotype(normal, DARTS_V2.normal_concat, DARTS_V2.reduce, DARTS_V2.reduce_concat)
    net = small_cifar(auxiliary=False, C=4, layers=3, genotype=DARTS_V2)
    other = small_cifar(auxiliary=False, C=4, layers=3, genotype=swapped)
    check_compatible(net, other.state_dict())  # indistinguishable by keys alone
    with pytest.raises(DartsError, match="different genotype"):
        check_compatible(net, other.state_dict(), genotype=swapped)
