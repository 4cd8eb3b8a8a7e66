"""Tests for darts.export: model exports (save/load through the space registry), their atomic
writing, and the check that a state dict fits a network."""
from __future__ import annotations

import errno
import io
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from darts.errors import DartsError
from darts.export import EXPORT_FORMAT_VERSION, check_compatible, load, save
from darts.spaces import SPACES
from darts.spaces.darts_cnn.genotype import DARTS_V1, DARTS_V2, Genotype
from darts.spaces.darts_cnn.network import NetworkCIFAR, NetworkImageNet
from darts.spaces.nb201.genotype import NB201Genotype
from darts.spaces.nb201.network import NB201Network

REPO_ROOT = Path(__file__).resolve().parent.parent
NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


def small_cifar(auxiliary=True, genotype=DARTS_V2, C=8, layers=5, **kwargs):
    torch.manual_seed(0)
    return NetworkCIFAR(C, 10, layers, auxiliary, genotype, **kwargs)


def small_nb201(C=4, N=1):
    torch.manual_seed(0)
    return NB201Network(C=C, num_classes=10, N=N, genotype=NB201Genotype.from_string(NB201_CELL))


def trained(net: nn.Module) -> nn.Module:
    """``net`` after one SGD step, so its weights and BN statistics differ from the initial ones."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    net.train()
    logits, logits_aux = net(x)
    loss = F.cross_entropy(logits, y)
    if logits_aux is not None:
        loss = loss + 0.4 * F.cross_entropy(logits_aux, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return net.eval()


def eval_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


def files_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------
FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from darts.export import load

    model = load(sys.argv[1])
    assert not model.training, "load must return an eval-mode network"
    x = torch.load(sys.argv[2], weights_only=True)
    with torch.no_grad():
        torch.save(model(x), sys.argv[3])
    print(type(model).__name__, model.config)
""")


def test_export_loads_in_a_fresh_process_with_the_same_logits(tmp_path):
    net = trained(small_cifar(auxiliary=True, C=8, layers=5, drop_path_prob=0.2))
    x = torch.randn(3, 3, 32, 32)
    expected = eval_logits(net, x)
    export_path = tmp_path / "model.pt"
    save(net, export_path)
    assert files_in(tmp_path) == ["model.pt"]  # no temporary file left behind
    payload = torch.load(export_path, weights_only=True)
    assert (payload["space"], payload["network"], payload["class_name"]) == ("darts", "cifar", "NetworkCIFAR")
    assert payload["format_version"] == EXPORT_FORMAT_VERSION
    assert payload["genotype"] == DARTS_V2.to_dict()
    assert payload["config"] == net.config

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


def test_cifar_export_round_trip_gives_identical_outputs(tmp_path):
    net = trained(small_cifar(auxiliary=True, C=8, layers=5))
    save(net, tmp_path / "cifar.pt")
    loaded = load(tmp_path / "cifar.pt")
    assert type(loaded) is NetworkCIFAR and loaded.genotype == DARTS_V2 and not loaded.training
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(eval_logits(loaded, x), eval_logits(net, x))


def test_imagenet_export_round_trip(tmp_path):
    torch.manual_seed(0)
    net = NetworkImageNet(8, 10, 3, False, DARTS_V1).eval()
    save(net, tmp_path / "imagenet.pt")
    loaded = load(tmp_path / "imagenet.pt")
    assert type(loaded) is NetworkImageNet and loaded.genotype == DARTS_V1
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(eval_logits(loaded, x), eval_logits(net, x))


def test_nb201_export_round_trip_gives_identical_outputs(tmp_path):
    net = trained(small_nb201())
    save(net, tmp_path / "nb201.pt")
    payload = torch.load(tmp_path / "nb201.pt", weights_only=True)
    assert (payload["space"], payload["network"]) == ("nb201", "nb201")
    loaded = load(tmp_path / "nb201.pt")
    assert type(loaded) is NB201Network and loaded.genotype == net.genotype and loaded.config == net.config
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(eval_logits(loaded, x), eval_logits(net, x))


def test_a_format_version_1_export_loads_by_its_class_name(tmp_path):
    net = small_cifar(auxiliary=False, C=4, layers=3)
    path = tmp_path / "old.pt"
    save(net, path)
    payload = torch.load(path, weights_only=True)
    # Version 1 named the network by its class alone.
    del payload["space"], payload["network"]
    payload["format_version"] = 1
    torch.save(payload, path)
    loaded = load(path)
    x = torch.randn(2, 3, 16, 16)
    assert type(loaded) is NetworkCIFAR and torch.equal(eval_logits(loaded, x), eval_logits(net, x))


def test_only_registered_networks_can_be_exported(tmp_path):
    class TweakedCIFAR(NetworkCIFAR):
        pass

    for model in (nn.Linear(2, 2), TweakedCIFAR(4, 10, 3, False, DARTS_V2)):
        with pytest.raises(DartsError, match=f"cannot export a {type(model).__name__}: only .*NetworkCIFAR"):
            save(model, tmp_path / "model.pt")
    assert files_in(tmp_path) == []


def test_the_export_gets_the_umask_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        save(small_nb201(), tmp_path / "model.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "model.pt").stat().st_mode) == 0o666 & ~0o027


# ---------------------------------------------------------------------------
# Atomic writing
# ---------------------------------------------------------------------------
def crash_halfway_through_torch_save(monkeypatch, failure: BaseException):
    """torch.save writes half of its bytes, then ``failure`` is raised (a kill, a full disk)."""
    real_save = torch.save

    def half_save(obj, target, *args, **kwargs):
        whole = io.BytesIO()
        real_save(obj, whole, *args, **kwargs)
        half = whole.getvalue()[: len(whole.getvalue()) // 2]
        if hasattr(target, "write"):
            target.write(half)
        else:   # a path: what a writer that is not atomic would hand over
            Path(target).write_bytes(half)
        raise failure

    monkeypatch.setattr(torch, "save", half_save)


@pytest.mark.parametrize("failure, raised", [
    (KeyboardInterrupt(), KeyboardInterrupt),
    (OSError(errno.ENOSPC, "No space left on device"), DartsError),
])
def test_a_crash_while_writing_never_replaces_the_existing_export(tmp_path, monkeypatch, failure, raised):
    path = tmp_path / "model.pt"
    old = small_cifar(auxiliary=False, C=4, layers=3)
    save(old, path)
    before = path.read_bytes()
    crash_halfway_through_torch_save(monkeypatch, failure)
    with pytest.raises(raised) as info:
        save(small_cifar(auxiliary=False, C=6, layers=3), path)
    monkeypatch.undo()
    if raised is DartsError:
        assert str(path) in str(info.value) and "No space left" in str(info.value)
    assert path.read_bytes() == before and files_in(tmp_path) == ["model.pt"]
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(eval_logits(load(path), x), eval_logits(old, x))


def test_an_unwritable_place_is_a_readable_error(tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    path = not_a_directory / "model.pt"
    with pytest.raises(DartsError, match="cannot write model export") as info:
        save(small_nb201(), path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------
# Readable load errors
# ---------------------------------------------------------------------------
def test_load_missing_file_or_directory(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(DartsError, match="does not exist") as info:
        load(path)
    assert str(path) in str(info.value)
    with pytest.raises(DartsError, match="is a directory") as info:
        load(tmp_path)
    assert str(tmp_path) in str(info.value)


class NotPlainData:
    pass


def test_load_truncated_or_garbage_file_is_an_error_and_writes_nothing(tmp_path):
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
    listing = files_in(tmp_path)
    for path in (truncated, garbage, with_object):
        contents = path.read_bytes()
        with pytest.raises(DartsError, match="corrupt") as info:
            load(path)
        assert str(path) in str(info.value)
        assert path.read_bytes() == contents
    assert files_in(tmp_path) == listing


def test_load_a_torch_file_that_is_not_a_model_export(tmp_path):
    plain_state = tmp_path / "state_dict.pt"
    torch.save(small_cifar(auxiliary=False, C=4, layers=3).state_dict(), plain_state)
    with pytest.raises(DartsError, match="not a darts model export") as info:
        load(plain_state)
    assert str(plain_state) in str(info.value)


def tampered(payload: dict, **changes) -> dict:
    """``payload`` with keys set (a value) or removed (None)."""
    payload = dict(payload)
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


def v1(payload: dict, class_name: str) -> dict:
    return tampered(payload, format_version=1, space=None, network=None, class_name=class_name)


def valid_choices(*names: str) -> str:
    return ".*".join(names)


@pytest.mark.parametrize("tamper, message", [
    (lambda p: tampered(p, format_version=EXPORT_FORMAT_VERSION + 1), "newer than this code reads"),
    (lambda p: tampered(p, format_version="two"), "invalid format_version"),
    (lambda p: tampered(p, state_dict=None, genotype=None), "incomplete: it lacks genotype, state_dict"),
    (lambda p: v1(p, "NetworkMNIST"), "unknown network class 'NetworkMNIST'; known: .*NetworkCIFAR.*NB201Network"),
    (lambda p: tampered(p, space="resnet"), "unknown search space 'resnet'; valid choices: "
                                           + valid_choices(*SPACES.names())),
    (lambda p: tampered(p, network="mnist"), "unknown network 'mnist' of the darts space; valid choices: "
                                            + valid_choices(*SPACES.get("darts").networks)),
    (lambda p: tampered(p, config=[1, 2]), "malformed config"),
    (lambda p: tampered(p, config={**p["config"], "width": 3}), "config that does not fit NetworkCIFAR"),
    (lambda p: tampered(p, config={**p["config"], "layers": 0}), "layers"),
    (lambda p: tampered(p, genotype={"normal": []}), "invalid genotype"),
    (lambda p: tampered(p, space="nb201", network="nb201"), "invalid genotype"),
    (lambda p: tampered(p, config={**p["config"], "C": 6}), "different network"),
])
def test_load_names_the_path_and_what_is_wrong(tmp_path, tamper, message):
    path = tmp_path / "tampered.pt"
    save(small_cifar(auxiliary=False, C=4, layers=3), path)
    torch.save(tamper(torch.load(path, weights_only=True)), path)
    with pytest.raises(DartsError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------
# Checkpoint compatibility
# ---------------------------------------------------------------------------
def test_check_compatible_accepts_its_own_state():
    net = small_cifar(auxiliary=True, C=4, layers=3)
    check_compatible(net, net.state_dict(), genotype=DARTS_V2.to_dict())
    nb201 = small_nb201()
    check_compatible(nb201, nb201.state_dict(), genotype=nb201.genotype.to_dict())


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
    with pytest.raises(DartsError, match="different genotype"):
        check_compatible(net, other.state_dict(), genotype=swapped.to_dict())


def test_check_compatible_reads_a_recorded_genotype_with_the_networks_own_genotype_class():
    net = small_nb201()
    other_cell = NB201Genotype.from_string(NB201_CELL.replace("avg_pool_3x3~0", "skip_connect~0"))
    with pytest.raises(DartsError, match="different genotype"):
        check_compatible(net, net.state_dict(), genotype=other_cell.to_dict())
    with pytest.raises(DartsError, match="records an invalid genotype"):
        check_compatible(net, net.state_dict(), genotype={"normal": []})
