"""DARTS (Liu et al., 2019): bilevel gradient descent, first or second order.

Each step is an alpha step on an alpha-split batch, then a weight step on a
weight-split batch, as published. Every backward pass asks only for the
gradients it needs (alphas or weights), which skips the other half of the
backward kernels.

The strategy owns the alphas (:class:`~darts.strategies.arch.ArchParameters`) and calls the
supernet as ``supernet(x, arch_weights)`` with ``arch_weights = {cell: softmax(alpha)}``;
subclasses change how the weights are made (:meth:`DARTS.forward_weights`), not the loop.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.runtime import Runtime, upcast
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import ArchWeights, EdgeWeights
from darts.strategies.arch import ArchParameters, softmax_per_group
from darts.strategies.base import STRATEGIES, Batch, SupernetStrategy
from darts.strategies.optim import WeightSchedule, weight_optimizer

HESSIAN_MODES = ("finite_difference", "exact")


@contextlib.contextmanager
def preserved_bn_stats(model: nn.Module):
    """Run virtual-step passes without moving the BN running statistics."""
    buffers = [(b, b.clone()) for name, b in model.named_buffers() if "running" in name or "num_batches" in name]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def batch_metrics(prefix: str, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """Sums (not means) so the engine can accumulate across batches of any size."""
    count = torch.full((), float(targets.shape[0]), device=targets.device)  # a fill, not a host copy
    return {f"{prefix}loss_sum": loss.detach().float() * count,
            f"{prefix}correct": (logits.detach().argmax(1) == targets).sum().float(),
            f"{prefix}count": count}


def clip_coefficient(grads: list[torch.Tensor], max_norm: float | None) -> float:
    """min(1, max_norm / (||grads|| + 1e-6)): the factor gradient-norm clipping scales ``grads`` by
    (quark0/darts rnn/architect.py ``_clip``, lines 11-21); 1.0 when ``max_norm`` is None."""
    if max_norm is None:
        return 1.0
    norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    return min(1.0, max_norm / (norm + 1e-6))


class ClassificationObjective:
    """The image searches' objective: cross-entropy of ``forward(inputs, arch)``'s logits.

    An objective is what :meth:`DARTS.loss` minimises: ``loss(forward, batch, arch, regularized)``
    -> (loss, output), ``metrics(prefix, loss, output, batch)`` -> the step's metric sums, and
    ``unrolled_grad_clip`` (None: the virtual step's gradient is not clipped). A search task whose
    batches are not (images, labels) hands the strategy its own (:meth:`DARTS.set_objective`).
    """

    unrolled_grad_clip = None

    def __init__(self, criterion: nn.Module):
        self.criterion = criterion

    def loss(self, forward, batch: Batch, arch: ArchWeights, regularized: bool = False):
        inputs, targets = batch
        logits = forward(inputs, arch)
        return self.criterion(upcast(logits), targets), logits

    def metrics(self, prefix: str, loss: torch.Tensor, logits: torch.Tensor, batch: Batch) -> dict:
        return batch_metrics(prefix, loss, logits, batch[1])


@STRATEGIES.register("darts")
class DARTS(SupernetStrategy):
    """order=1: first-order DARTS; order=2: the unrolled (second-order) gradient.

    hessian: how order 2 gets the mixed second derivative
    ``grad_alpha (grad_w L_train . v)``: ``finite_difference`` as published
    (eps = 0.01 / ||v||, central difference over 2 eps) or ``exact`` (double
    backward).
    """

    name = "darts"
    edge_normalization = False   # PC-DARTS: per-edge betas, softmax-normalised over each node's inputs
    alpha_grad_clip: float | None = None   # optim.alphas.grad_clip (None: the alphas' gradient is not clipped)

    def __init__(self, order: int = 1, hessian: str = "finite_difference", arch_start_epoch: int = 0):
        if order not in (1, 2):
            raise DartsError(f"strategy.order must be 1 or 2, got {order!r}")
        if hessian not in HESSIAN_MODES:
            raise DartsError(f"unknown strategy.hessian {hessian!r}; valid choices: {', '.join(HESSIAN_MODES)}")
        self.order = order
        self.hessian = hessian
        self.arch_start_epoch = arch_start_epoch
        self.criterion = nn.CrossEntropyLoss()
        self.objective = ClassificationObjective(self.criterion)
        self.virtual_clip = 1.0   # the last virtual step's gradient-clipping factor (second order)

    # -- construction ------------------------------------------------------------
    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        self.space = space
        self.model = model
        self.runtime = runtime
        # Drawn right after the supernet's weights, as the original code draws its alphas.
        self.arch = ArchParameters(space.arch_shapes(), edge_betas=self.edge_normalization).to(runtime.device)
        self.node_edges = space.node_edges()
        self.forward = runtime.prepare(model)
        self.weights = list(model.parameters())
        self.alphas = list(self.arch.parameters())
        w_cfg, a_cfg = optim_cfg.weights, optim_cfg.alphas
        self.grad_clip = w_cfg.grad_clip
        # PC-DARTS's ImageNet search clips the alphas' gradient too (train_search_imagenet.py line 204).
        self.alpha_grad_clip = a_cfg.get("grad_clip")
        self.w_optimizer = weight_optimizer(self.weights, w_cfg)
        self.a_optimizer = torch.optim.Adam(self.alphas, lr=a_cfg.lr, betas=tuple(a_cfg.betas),
                                            weight_decay=a_cfg.weight_decay, foreach=True)
        self.scheduler = WeightSchedule(self.w_optimizer, w_cfg, epochs, steps_per_epoch)

    def checkpointables(self) -> dict:
        return {"arch": self.arch, "w_optimizer": self.w_optimizer, "a_optimizer": self.a_optimizer,
                "scheduler": self.scheduler,
                "grad_scaler": self.runtime.scaler}

    def learning_rates(self) -> dict[str, float]:
        return {"lr/weights": self.w_optimizer.param_groups[0]["lr"],
                "lr/alphas": self.a_optimizer.param_groups[0]["lr"]}

    def arch_parameters(self) -> list[torch.Tensor]:
        return self.alphas

    def arch_record(self) -> dict[str, list]:
        return self.arch.record()

    # -- architecture weights ------------------------------------------------------------
    def edge_scales(self, detach: bool = False) -> dict[str, torch.Tensor | None]:
        """{cell: (edges,)} normalised betas (PC-DARTS), or None per cell without edge normalisation."""
        betas = self.arch.betas()
        return {cell: softmax_per_group(betas[cell].detach() if detach else betas[cell], self.node_edges)
                if cell in betas else None for cell in self.arch.cell_types}

    def forward_weights(self) -> ArchWeights:
        """What a training forward mixes with: softmax(alpha) per edge (times the normalised betas)."""
        scales = self.edge_scales()
        return self.constrained({cell: EdgeWeights(torch.softmax(alphas, dim=-1), edge_scales=scales[cell])
                                 for cell, alphas in self.arch.alphas().items()})

    def expected_weights(self) -> ArchWeights:
        """Deterministic weights, differentiable in the architecture parameters, that stand for the
        strategy's mixture (what the Hessian diagnostic differentiates): DARTS's own forward weights."""
        return self.forward_weights()

    def eval_arch_weights(self) -> ArchWeights:
        with torch.no_grad():
            return self.forward_weights()

    def mixing_weights(self) -> dict[str, torch.Tensor]:
        """softmax(alpha) in float64 on the CPU (the derivation's ties are decided there), each row
        scaled by its edge's normalised beta where there are betas."""
        scales = self.edge_scales(detach=True)
        weights = {}
        for cell, alphas in self.arch.alphas().items():
            cell_weights = torch.softmax(alphas.detach().double().cpu(), dim=-1)
            if scales[cell] is not None:
                cell_weights = cell_weights * scales[cell].double().cpu()[:, None]
            weights[cell] = cell_weights
        return weights

    def end_epoch(self, epoch: int) -> None:
        self.scheduler.after_epoch()

    def hessian_objective(self, batch: Batch):
        """RobustDARTS (src/search/analyze.py): the float32 validation cross-entropy at the current
        weights plus the alphas' L2 term of the Adam weight decay (their Hessian includes it), with
        the supernet in whatever mode the caller set (they measure in train mode)."""
        weight_decay = self.a_optimizer.param_groups[0]["weight_decay"]

        def loss_fn() -> torch.Tensor:
            loss, _ = self.loss(batch, float32=True, arch=self.expected_weights())
            return loss + 0.5 * weight_decay * sum((alpha * alpha).sum() for alpha in self.alphas)
        return loss_fn, self.alphas

    # -- one search step -------------------------------------------------------------
    def set_objective(self, objective) -> None:
        """What :meth:`loss` minimises from now on (see :class:`ClassificationObjective`)."""
        self.objective = objective

    def loss(self, batch: Batch, float32: bool = False, arch: ArchWeights | None = None,
             regularized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective of the supernet on ``batch`` under ``arch`` (default: a fresh
        :meth:`forward_weights`), under the run's autocast unless ``float32``; ``regularized``: the
        weight step's loss (with the objective's regularisers, if it has any)."""
        if arch is None:
            arch = self.forward_weights()
        if float32:
            return self.objective.loss(self.model, batch, arch, regularized)
        with self.runtime.autocast():
            return self.objective.loss(self.forward, batch, arch, regularized)

    def backward(self, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        """Gradients of ``loss`` into ``.grad``: only for ``params`` on the fast path, for every
        parameter on the baseline path (as the original code's plain ``loss.backward()``)."""
        scaled = self.runtime.scaler.scale(loss)
        if self.runtime.selective_grads:
            scaled.backward(inputs=params)
        else:
            scaled.backward()
        self.runtime.dist.average_gradients(params)

    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        metrics = {}
        if epoch >= self.arch_start_epoch:
            alpha_batch = next(alpha_batches)
            metrics.update(self.alpha_step(train_batch, alpha_batch))
        metrics.update(self.weight_step(train_batch))
        return metrics

    def weight_step(self, batch: Batch, arch: ArchWeights | None = None) -> dict[str, torch.Tensor]:
        scaler = self.runtime.scaler
        loss, logits = self.loss(batch, arch=arch, regularized=True)
        self.w_optimizer.zero_grad(set_to_none=True)
        self.backward(loss, self.weights)
        scaler.unscale_(self.w_optimizer)
        nn.utils.clip_grad_norm_(self.weights, self.grad_clip, foreach=True)
        scaler.step(self.w_optimizer)
        scaler.update()
        self.scheduler.after_step()
        for alpha in self.alphas:  # the baseline's full backward also filled these
            alpha.grad = None
        return self.objective.metrics("", loss, logits, batch)

    def alpha_step(self, train_batch: Batch, alpha_batch: Batch,
                   arch: ArchWeights | None = None) -> dict[str, torch.Tensor]:
        self.a_optimizer.zero_grad(set_to_none=True)
        if self.order == 1:
            loss, logits = self.loss(alpha_batch, arch=arch)
            self.backward(loss, self.alphas)
            if self.alpha_grad_clip is not None:
                self.runtime.scaler.unscale_(self.a_optimizer)
                nn.utils.clip_grad_norm_(self.alphas, self.alpha_grad_clip, foreach=True)
            self.runtime.scaler.step(self.a_optimizer)
        else:
            # The unrolled gradient runs in float32: finite differences drown in half precision.
            grads, loss, logits = self.unrolled_alpha_gradient(train_batch, alpha_batch)
            for alpha, grad in zip(self.alphas, grads):
                alpha.grad = grad
            if self.alpha_grad_clip is not None:
                nn.utils.clip_grad_norm_(self.alphas, self.alpha_grad_clip, foreach=True)
            self.a_optimizer.step()
        self.a_optimizer.zero_grad(set_to_none=True)
        return self.objective.metrics("alpha_", loss, logits, alpha_batch)

    # -- second order ------------------------------------------------------------------
    def virtual_step_direction(self, train_batch: Batch) -> list[torch.Tensor]:
        """mu * m + c * grad_w L_train(w, alpha) + lambda * w: the next SGD step before scaling by xi;
        c = :attr:`virtual_clip`, the objective's clipping of that gradient (1: none)."""
        group = self.w_optimizer.param_groups[0]
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        loss, _ = self.loss(train_batch, float32=True)
        grads = self.runtime.dist.average_tensors(torch.autograd.grad(loss, self.weights))
        self.virtual_clip = clip_coefficient(grads, self.objective.unrolled_grad_clip)
        if self.virtual_clip != 1.0:
            grads = torch._foreach_mul(grads, self.virtual_clip)
        direction = []
        for weight, grad in zip(self.weights, grads):
            step = grad + weight_decay * weight.detach()
            buffer = self.w_optimizer.state.get(weight, {}).get("momentum_buffer")
            if buffer is not None:
                step = step + momentum * buffer
            direction.append(step)
        return direction

    def unrolled_alpha_gradient(self, train_batch: Batch, alpha_batch: Batch):
        """d alpha = grad_a L_val(w', a) - xi * grad_a,w L_train(w, a) . grad_w' L_val(w', a),
        with w' = w - xi * (mu * m + grad_w L_train + lambda * w) and xi the current weight lr.

        The virtual step is taken in place on the weights and undone from a copy
        of the weight tensors, never of the model.
        """
        xi = self.w_optimizer.param_groups[0]["lr"]
        originals = [w.detach().clone() for w in self.weights]
        with preserved_bn_stats(self.model):
            direction = self.virtual_step_direction(train_batch)
            with torch.no_grad():
                torch._foreach_add_([w.data for w in self.weights], direction, alpha=-xi)
            loss, logits = self.loss(alpha_batch, float32=True)
            grads = torch.autograd.grad(loss, self.alphas + self.weights)
            d_alpha, v = grads[:len(self.alphas)], self.runtime.dist.average_tensors(grads[len(self.alphas):])
            v_clip = clip_coefficient(v, self.objective.unrolled_grad_clip)   # rnn/architect.py line 68
            if v_clip != 1.0:
                v = torch._foreach_mul(v, v_clip)
            with torch.no_grad():
                torch._foreach_copy_([w.data for w in self.weights], originals)
            if self.hessian == "exact":
                hessian_v = self.exact_mixed_hvp(v, train_batch)
            else:
                hessian_v = self.finite_difference_mixed_hvp(v, originals, train_batch)
        # Under DDP each term above came from this rank's shard; their mean over ranks is the
        # global batch's gradient (v and the virtual step were averaged already, as they must be).
        # The clipped virtual step w - xi c g has the mixed term xi c H v (rnn/architect.py line 73).
        xi = xi * self.virtual_clip
        arch_grads = self.runtime.dist.average_tensors([da - xi * hv for da, hv in zip(d_alpha, hessian_v)])
        return arch_grads, loss, logits

    def finite_difference_mixed_hvp(self, v, originals, train_batch: Batch) -> list[torch.Tensor]:
        """(grad_a L_train(w + eps v) - grad_a L_train(w - eps v)) / (2 eps), eps = 0.01 / ||v||."""
        weights = [w.data for w in self.weights]
        eps = 0.01 / torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v)))
        with torch.no_grad():
            torch._foreach_add_(weights, torch._foreach_mul(v, eps))
        grads_plus = torch.autograd.grad(self.loss(train_batch, float32=True)[0], self.alphas)
        with torch.no_grad():
            torch._foreach_add_(weights, torch._foreach_mul(v, -2 * eps))
        grads_minus = torch.autograd.grad(self.loss(train_batch, float32=True)[0], self.alphas)
        with torch.no_grad():
            torch._foreach_copy_(weights, originals)
        return [(gp - gm) / (2 * eps) for gp, gm in zip(grads_plus, grads_minus)]

    def exact_mixed_hvp(self, v, train_batch: Batch) -> list[torch.Tensor]:
        """grad_a (grad_w L_train(w, a) . v) by double backward."""
        loss, _ = self.loss(train_batch, float32=True)
        grads_w = torch.autograd.grad(loss, self.weights, create_graph=True)
        dot = sum((g * vi).sum() for g, vi in zip(grads_w, v))
        return list(torch.autograd.grad(dot, self.alphas))
