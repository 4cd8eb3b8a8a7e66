"""The fast path: same algorithm as the eager float32 baseline, and CPU checks of the GPU code paths."""
import copy
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from darts.errors import DartsError
from darts.fastpath import FastPathOptions, apply_fast_path
from darts.runtime import Runtime, build_runtime
from darts.spaces import build_space
from darts.spaces.darts_cnn.genotype import DARTS_V2, PRIMITIVES
from darts.spaces.darts_cnn.network import NetworkCIFAR
from darts.strategies import build_strategy

SPACE = OmegaConf.create(dict(name="darts", primitives=list(PRIMITIVES), C=4, layers=3, steps=4, multiplier=4,
                              stem_multiplier=3))
OPTIM = OmegaConf.create(dict(weights=dict(lr=0.1, lr_min=0.0, momentum=0.9, weight_decay=3e-4, grad_clip=5.0),
                              alphas=dict(lr=0.01, betas=[0.5, 0.999], weight_decay=1e-3)))
CPU = torch.device("cpu")


def fast_cfg(**changes):
    return OmegaConf.create(dict(dict(enabled=True, channels_last=True, amp="auto", compile="auto",
                                      compile_mode="default", checkpoint_cells=False), **changes))


# These build a CUDA runtime on a machine without CUDA (its options resolve without a GPU), and
# torch warns that the fp16 gradient scaler such a runtime would use is off.
NO_CUDA_SCALER = pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled, but CUDA is not available")


@NO_CUDA_SCALER
def test_runtime_defaults_on_cpu_and_the_baseline():
    fast = build_runtime(fast_cfg(), CPU, deterministic=False)
    assert fast.amp_dtype is None and fast.channels_last and not fast.compile and fast.selective_grads
    assert fast.depthwise_conv_grads and fast.fused_mixed_ops
    baseline = build_runtime(fast_cfg(enabled=False), CPU, deterministic=False)
    assert not (baseline.channels_last or baseline.selective_grads or baseline.compile)
    assert not (baseline.depthwise_conv_grads or baseline.fused_mixed_ops)
    assert not build_runtime(fast_cfg(depthwise_grads="native"), CPU, False).depthwise_conv_grads
    assert not build_runtime(fast_cfg(), torch.device("cuda"), False).depthwise_conv_grads
    with pytest.raises(DartsError, match="valid choices: auto, conv, native"):
        build_runtime(fast_cfg(depthwise_grads="fft"), CPU, False)
    assert build_runtime(fast_cfg(amp="bf16"), CPU, False).amp_dtype == torch.bfloat16
    compiled = build_runtime(fast_cfg(compile=True), CPU, False)
    assert compiled.compile and not compiled.fused_mixed_ops
    with pytest.raises(DartsError, match="valid choices: auto, bf16, fp16, off"):
        build_runtime(fast_cfg(amp="fp8"), CPU, False)


@NO_CUDA_SCALER
def test_cpu_malloc_mode_is_resolved_per_device():
    assert build_runtime(fast_cfg(), CPU, False).retain_cpu_memory == (platform.libc_ver()[0] == "glibc")
    assert not build_runtime(fast_cfg(cpu_malloc="system"), CPU, False).retain_cpu_memory
    assert not build_runtime(fast_cfg(enabled=False), CPU, False).retain_cpu_memory
    assert not build_runtime(fast_cfg(), torch.device("cuda"), False).retain_cpu_memory
    with pytest.raises(DartsError, match="valid choices: auto, retain, system"):
        build_runtime(fast_cfg(cpu_malloc="jemalloc"), CPU, False)


REPO = Path(__file__).resolve().parents[1]
MMAPPED_BYTES = """
import ctypes, torch
from darts.runtime import retain_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if {retain}:
    assert retain_freed_memory()
before = libc.mallinfo2().hblkhd
tensor = torch.empty(4 * 2**20)  # 16 MiB
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retained_memory_serves_large_tensors_from_the_heap():
    # Each in a fresh interpreter: mallopt is process-wide.
    mapped = {retain: int(subprocess.run([sys.executable, "-c", MMAPPED_BYTES.format(retain=retain)], check=True,
                                         capture_output=True, text=True, cwd=REPO).stdout)
              for retain in (False, True)}
    assert mapped[False] >= 16 * 2**20  # glibc's default: a fresh mapping per large tensor
    assert mapped[True] == 0


def strategy_with(runtime, order=1, twin_of=None, **options):
    """A DARTS strategy (``options``: more of its settings) on a tiny supernet; ``twin_of``: start from a
    copy of that strategy's supernet weights and alphas."""
    space = build_space(SPACE)
    strategy = build_strategy(OmegaConf.create(dict(name="darts", order=order, **options)))
    if twin_of is None:
        torch.manual_seed(0)
        model = strategy.build_supernet(space, 4, 3)
    else:
        model = copy.deepcopy(twin_of.model)
    strategy.setup(space, model, OPTIM, epochs=2, steps_per_epoch=2, runtime=runtime)
    if twin_of is not None:
        strategy.arch.load_state_dict(twin_of.arch.state_dict())
    return strategy, model


def trained_parameters(strategy):
    """What a search step trains: the supernet's weights and the strategy's alphas."""
    return list(strategy.model.parameters()) + strategy.arch_parameters()


def batches(n=3):
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)) for _ in range(n)]


def test_fast_path_takes_the_same_steps_as_the_eager_baseline():
    fast, _ = strategy_with(Runtime(CPU, channels_last=True, depthwise_conv_grads=True))
    base, _ = strategy_with(Runtime(CPU, channels_last=False, selective_grads=False, fused_mixed_ops=False),
                            twin_of=fast)
    assert all(torch.equal(a, b) for a, b in zip(trained_parameters(fast), trained_parameters(base)))
    data = batches()
    for strategy in (fast, base):
        for step in range(2):
            strategy.step(data[step], iter([data[2]]), epoch=0)
    for a, b in zip(trained_parameters(fast), trained_parameters(base)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hessian, tolerance", [("exact", 1e-3), ("finite_difference", 2e-2)])
def test_fast_path_second_order_gradient_matches_the_baseline(hessian, tolerance):
    # Compared before Adam: its normalisation turns float noise on near-zero gradients into full steps.
    # The published finite difference divides by its step (0.01 / |grad|), which turns float rounding
    # (NHWC against NCHW, one thread against two) into ~0.5 % on this network; the exact
    # Hessian-vector product keeps the two paths within rounding.
    fast, _ = strategy_with(Runtime(CPU, channels_last=True, depthwise_conv_grads=True), order=2, hessian=hessian)
    base, _ = strategy_with(Runtime(CPU, channels_last=False, selective_grads=False, fused_mixed_ops=False), order=2,
                            twin_of=fast, hessian=hessian)
    data = batches()
    for strategy in (fast, base):
        strategy.weight_step(data[2])  # a momentum buffer for the virtual step
    got, _, _ = fast.unrolled_alpha_gradient(data[0], data[1])
    expected, _, _ = base.unrolled_alpha_gradient(data[0], data[1])
    for g, e in zip(got, expected):
        assert (g - e).norm() <= tolerance * e.norm()


def test_alpha_step_computes_no_weight_gradients_on_the_fast_path():
    strategy, model = strategy_with(Runtime(CPU))
    seen = []
    for weight in model.parameters():
        weight.register_hook(lambda grad: seen.append(grad))
    data = batches()
    alphas = [a.detach().clone() for a in strategy.arch_parameters()]
    strategy.alpha_step(data[0], data[1])
    assert seen == [] and all(w.grad is None for w in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(alphas, strategy.arch_parameters()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_search_step_runs_on_cpu_and_tracks_float32(dtype):
    amp, _ = strategy_with(Runtime(CPU, amp_dtype=dtype))
    full, _ = strategy_with(Runtime(CPU), twin_of=amp)
    data = batches()
    assert amp.runtime.scaler.is_enabled() == (dtype == torch.float16)
    amp_metrics = amp.step(data[0], iter([data[1]]), epoch=0)
    full_metrics = full.step(data[0], iter([data[1]]), epoch=0)
    rel = abs(amp_metrics["loss_sum"] - full_metrics["loss_sum"]) / full_metrics["loss_sum"]
    assert rel < 5e-2
    assert all(torch.isfinite(p).all() for p in trained_parameters(amp))
    assert "grad_scaler" in amp.checkpointables()


def test_second_order_under_autocast_stays_float32():
    amp, _ = strategy_with(Runtime(CPU, amp_dtype=torch.bfloat16), order=2)
    full, _ = strategy_with(Runtime(CPU), order=2, twin_of=amp)
    data = batches()
    got, _, _ = amp.unrolled_alpha_gradient(data[0], data[1])
    expected, _, _ = full.unrolled_alpha_gradient(data[0], data[1])
    for g, e in zip(got, expected):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_checkpointed_cells_give_the_same_gradients():
    plain, model = strategy_with(Runtime(CPU))
    recomputed, other = strategy_with(Runtime(CPU, checkpoint_cells=True), twin_of=plain)
    assert other.checkpoint_cells and not model.checkpoint_cells
    x, y = batches()[0]
    for strategy in (plain, recomputed):
        loss, _ = strategy.loss((x, y))
        loss.backward()
    for a, b in zip(trained_parameters(plain), trained_parameters(recomputed)):
        assert a.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)

    torch.manual_seed(0)
    network = NetworkCIFAR(4, 4, 3, True, DARTS_V2, drop_path_prob=0.3)
    twin = copy.deepcopy(network)
    apply_fast_path(twin, FastPathOptions(checkpoint_cells=True))
    assert twin.checkpoint_cells
    grads = []
    for net in (network, twin):
        torch.manual_seed(7)  # drop path masks: the recomputation must replay them
        logits, aux = net(x)
        (logits.sum() + aux.sum()).backward()
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compiled_final_network_matches_eager_on_cpu():
    torch.manual_seed(0)
    network = NetworkCIFAR(4, 4, 2, False, DARTS_V2).eval()
    compiled = Runtime(CPU, compile=True).prepare(network)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), network(x), rtol=1e-4, atol=1e-5)
