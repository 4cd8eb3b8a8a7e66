"""SDARTS (Chen & Hsieh, ICML 2020): the weight step on perturbed architecture weights.

The alphas are trained exactly as by first-order DARTS (the alpha step on an alpha-split batch).
The weights are trained on a neighbourhood of the current architecture instead of on the point
itself: after the alpha step, the clean mixing weights ``A = softmax(alpha)`` (edges, ops) are
perturbed to ``A + delta`` and the weight step on the same training batch mixes the ops with those
perturbed probabilities directly (no softmax on top). ``delta`` is

* ``sdarts_rs`` (random smoothing): ``U(-eps, eps)`` in every entry;
* ``sdarts_adv`` (adversarial): ``pgd_steps`` steps of sign-gradient ascent of the training batch's
  loss in the L-inf ball of radius eps around A, from a random start in the ball, with step
  ``2 eps / pgd_steps``; the supernet runs in eval mode for those passes (BatchNorm on its running
  statistics, which the passes leave alone) and is put back in train mode for the weight step. If
  the attacked loss ends below the clean one (both in eval mode), the clean A is used.

After every change the perturbed rows are projected back onto the simplex as the authors' code does
(``Network.clip`` in ``sota/cnn/model_search.py``): clamp each entry to [0, 1], set a row whose
entries are all zero to a one at the row's argmax (taken before the clamp), divide by the row sum.
In ADV the projection follows the clip to the ball, so the projected point may leave the ball by
the renormalisation, as theirs does. eps grows linearly in the epoch (``sota/cnn/train_search.py``):
``eps_e = epsilon_min + (epsilon_max - epsilon_min) * e / E``, 0.03 -> 0.3 as published; it is
recorded per epoch as ``sdarts/epsilon`` (results.json history). ADV also records ``adv_loss`` and
``adv_acc``: the training batches under the weights the weight steps mixed with, in eval mode.

As the authors' code does it (``attacker/perturb.py`` ``Random_alpha`` / ``Linf_PGD_alpha``,
``sota/cnn/train_search.py`` ``train``): the perturbation acts on the probabilities, not on alpha;
the PGD passes' gradients reach only the perturbation (they zero the weights' gradients after the
attack, so none of them reaches the weight step); the weight step's gradient never reaches alpha
(they restore the saved alphas after it); evaluation and derivation use the clean softmax.

Differences, on purpose:
- the supernet is a function of the weights it is given: A + delta is built as new tensors and
  passed to ``weight_step(batch, arch=...)``; the alphas are never overwritten and restored;
- the noise comes from a CPU ``torch.Generator`` owned by the strategy and checkpointed, so a
  resumed run draws the same perturbations (theirs uses the global CUDA RNG);
- under DDP the attack's gradients and its two losses are averaged over the ranks, so every rank
  perturbs alike (the authors train on one GPU);
- the fall-back is a ``torch.where`` on the device, not a host comparison (no sync per step);
- the attack's passes run under the run's autocast (bf16 or fp16 on GPUs) like every other pass,
  theirs in float32; only the gradient's sign is used, and fp16 goes through the gradient scaler.
Order: first order by default, as the published runs (``--unrolled`` off); ``order=2`` works
through DARTS's unrolled alpha step, which is what ``--unrolled`` would do in their code.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

from darts.errors import DartsError
from darts.runtime import Runtime
from darts.spaces.base import SearchSpace
from darts.spaces.mixed import ArchWeights, EdgeWeights
from darts.strategies.base import STRATEGIES, Batch, GeneratorState, seed_from_global_rng
from darts.strategies.darts import DARTS, batch_metrics

PERTURBATIONS = ("random", "adversarial")


def project_rows(weights: torch.Tensor) -> torch.Tensor:
    """(edges, ops) -> (edges, ops) rows on the simplex, as ``Network.clip`` does: clamp to [0, 1];
    a row left all zero becomes a one at its argmax (of the unclamped row); divide by the row sum."""
    clamped = weights.clamp(0.0, 1.0)
    empty = clamped.sum(-1, keepdim=True) == 0
    argmax_rows = torch.zeros_like(weights).scatter_(-1, weights.argmax(-1, keepdim=True), 1.0)
    clamped = torch.where(empty, argmax_rows, clamped)
    return clamped / clamped.sum(-1, keepdim=True)


def linear_epsilon(epoch: int, epochs: int, epsilon_min: float, epsilon_max: float) -> float:
    """eps at ``epoch`` of ``epochs``: epsilon_min at 0, rising by (max - min) / epochs each epoch
    (``sota/cnn/train_search.py``: ``0.03 + (epsilon_alpha - 0.03) * epoch / epochs``)."""
    return epsilon_min + (epsilon_max - epsilon_min) * epoch / epochs


class SDARTS(DARTS):
    """DARTS with the weight step on perturbed softmax weights (see the module docstring).

    perturbation: ``random`` (SDARTS-RS) or ``adversarial`` (SDARTS-ADV, L-inf PGD).
    epsilon_max, epsilon_min: the radius's linear schedule over the epochs (0.3 and 0.03 published).
    pgd_steps: ADV's ascent steps (7 published), of size 2 eps / pgd_steps.
    order, hessian, arch_start_epoch: as for DARTS.
    """

    def __init__(self, perturbation: str, epsilon_max: float = 0.3, epsilon_min: float = 0.03, pgd_steps: int = 7,
                 order: int = 1, hessian: str = "finite_difference", arch_start_epoch: int = 0):
        super().__init__(order=order, hessian=hessian, arch_start_epoch=arch_start_epoch)
        if perturbation not in PERTURBATIONS:
            raise DartsError(f"unknown SDARTS perturbation {perturbation!r}; valid choices: {', '.join(PERTURBATIONS)}")
        if not 0 <= epsilon_min <= epsilon_max:
            raise DartsError(f"strategy.epsilon_min and epsilon_max need 0 <= epsilon_min <= epsilon_max, "
                             f"got {epsilon_min}, {epsilon_max}")
        if not isinstance(pgd_steps, int) or pgd_steps < 1:
            raise DartsError(f"strategy.pgd_steps must be a positive integer, got {pgd_steps!r}")
        self.perturbation = perturbation
        self.epsilon_max, self.epsilon_min = float(epsilon_max), float(epsilon_min)
        self.pgd_steps = pgd_steps
        self.epsilon = self.epsilon_min
        self.generator = torch.Generator()

    def setup(self, space: SearchSpace, model: nn.Module, optim_cfg, epochs: int, steps_per_epoch: int,
              runtime: Runtime) -> None:
        super().setup(space, model, optim_cfg, epochs, steps_per_epoch, runtime)
        self.epochs = epochs
        self.generator.manual_seed(seed_from_global_rng())

    def checkpointables(self) -> dict:
        return {**super().checkpointables(), "perturbation_generator": GeneratorState(self.generator)}

    def start_epoch(self, epoch: int) -> None:
        self.epsilon = linear_epsilon(epoch, self.epochs, self.epsilon_min, self.epsilon_max)

    def learning_rates(self) -> dict[str, float]:
        return {**super().learning_rates(), "sdarts/epsilon": self.epsilon}

    # -- perturbations -----------------------------------------------------------------------
    def clean_weights(self) -> dict[str, EdgeWeights]:
        """The current forward weights, detached: A = softmax(alpha) (edges, ops) per cell."""
        with torch.no_grad():
            return {cell: EdgeWeights(w.weights.detach(), w.active,
                                      None if w.edge_scales is None else w.edge_scales.detach())
                    for cell, w in self.forward_weights().items()}

    def uniform_noise(self, like: torch.Tensor) -> torch.Tensor:
        """U(-eps, eps) of ``like``'s shape from the strategy's generator (drawn on the CPU, so the
        stream does not depend on the device), on ``like``'s device."""
        noise = torch.empty(like.shape, dtype=torch.float32).uniform_(-self.epsilon, self.epsilon,
                                                                      generator=self.generator)
        return noise.to(like.device, like.dtype, non_blocking=True)

    def with_rows(self, clean: dict[str, EdgeWeights], rows: dict[str, torch.Tensor]) -> ArchWeights:
        """``clean`` with its mixing weights replaced by ``rows`` (edge scales and op lists kept), through
        the strategy's constraint (``constrain``) like every other forward's weights."""
        return self.constrained({cell: clean[cell]._replace(weights=rows[cell]) for cell in clean})

    def random_weights(self, clean: dict[str, EdgeWeights]) -> dict[str, torch.Tensor]:
        """Random smoothing (``Random_alpha``): project(A + U(-eps, eps))."""
        return {cell: project_rows(w.weights + self.uniform_noise(w.weights)) for cell, w in clean.items()}

    def adversarial_weights(self, batch: Batch, clean: dict[str, EdgeWeights]
                            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """L-inf PGD on the training batch (``Linf_PGD_alpha``): returns {cell: (edges, ops)} rows to
        mix with and the ``adv_`` metric sums of the training batch under them (eval mode)."""
        eps, step_size = self.epsilon, 2.0 * self.epsilon / self.pgd_steps
        anchor = {cell: w.weights for cell, w in clean.items()}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                clean_loss, clean_logits = self.loss(batch, arch=self.with_rows(clean, anchor))
            point = {cell: project_rows(a + self.uniform_noise(a)) for cell, a in anchor.items()}
            for _ in range(self.pgd_steps):
                point = self.ascent_step(batch, clean, anchor, point, eps, step_size)
            with torch.no_grad():
                attacked_loss, attacked_logits = self.loss(batch, arch=self.with_rows(clean, point))
        finally:
            self.model.train(was_training)
        clean_loss, attacked_loss = self.runtime.dist.average_tensors([clean_loss.float(), attacked_loss.float()])
        # Theirs keeps the clean A when loss_before > loss_after: an attack that lowered the loss.
        keep = attacked_loss >= clean_loss
        rows = {cell: torch.where(keep, point[cell], anchor[cell]) for cell in anchor}
        loss = torch.where(keep, attacked_loss, clean_loss)
        logits = torch.where(keep, attacked_logits, clean_logits)
        return rows, batch_metrics("adv_", loss, logits, batch[1])

    def ascent_step(self, batch: Batch, clean: dict[str, EdgeWeights], anchor: dict[str, torch.Tensor],
                    point: dict[str, torch.Tensor], eps: float, step_size: float) -> dict[str, torch.Tensor]:
        """One PGD step: point + step * sign(grad L_train(point)), clipped to the eps-ball around the
        anchor, projected. The gradient is taken of the perturbation only: the weights get none."""
        leaves = {cell: p.detach().requires_grad_(True) for cell, p in point.items()}
        loss, _ = self.loss(batch, arch=self.with_rows(clean, leaves))
        # The scaler (fp16 only) keeps small gradients from flushing to zero; their sign is all that is used.
        grads = torch.autograd.grad(self.runtime.scaler.scale(loss), list(leaves.values()))
        grads = self.runtime.dist.average_tensors(list(grads))
        stepped = {}
        with torch.no_grad():
            for (cell, leaf), grad in zip(leaves.items(), grads):
                moved = leaf + step_size * torch.nan_to_num(grad.sign(), nan=0.0)
                inside = anchor[cell] + (moved - anchor[cell]).clamp(-eps, eps)
                stepped[cell] = project_rows(inside)
        return stepped

    def perturbed_weights(self, batch: Batch) -> tuple[ArchWeights, dict[str, torch.Tensor]]:
        """The weights the weight step mixes with (A + delta, projected, detached) and extra metrics."""
        clean = self.clean_weights()
        if self.perturbation == "random":
            return self.with_rows(clean, self.random_weights(clean)), {}
        rows, metrics = self.adversarial_weights(batch, clean)
        return self.with_rows(clean, rows), metrics

    # -- one search step -------------------------------------------------------------------------
    def step(self, train_batch: Batch, alpha_batches: Iterator[Batch], epoch: int) -> dict[str, torch.Tensor]:
        metrics = {}
        if epoch >= self.arch_start_epoch:
            metrics.update(self.alpha_step(train_batch, next(alpha_batches)))
        # Perturbed after the alpha step, around the alphas it just moved, on the weight step's own batch.
        arch, perturbation_metrics = self.perturbed_weights(train_batch)
        metrics.update(perturbation_metrics)
        metrics.update(self.weight_step(train_batch, arch=arch))
        return metrics

    # eval_arch_weights(), mixing_weights() and genotype() come from DARTS: the clean softmax(alpha).


@STRATEGIES.register("sdarts_rs")
class SDARTSRandom(SDARTS):
    """SDARTS-RS: U(-eps, eps) on the softmax weights before every weight step (``--perturb_alpha random``)."""

    name = "sdarts_rs"

    def __init__(self, epsilon_max: float = 0.3, epsilon_min: float = 0.03, order: int = 1,
                 hessian: str = "finite_difference", arch_start_epoch: int = 0):
        super().__init__("random", epsilon_max=epsilon_max, epsilon_min=epsilon_min, order=order, hessian=hessian,
                         arch_start_epoch=arch_start_epoch)


@STRATEGIES.register("sdarts_adv")
class SDARTSAdversarial(SDARTS):
    """SDARTS-ADV: an L-inf PGD attack on the softmax weights before every weight step
    (``--perturb_alpha pgd_linf``)."""

    name = "sdarts_adv"

    def __init__(self, epsilon_max: float = 0.3, epsilon_min: float = 0.03, pgd_steps: int = 7, order: int = 1,
                 hessian: str = "finite_difference", arch_start_epoch: int = 0):
        super().__init__("adversarial", epsilon_max=epsilon_max, epsilon_min=epsilon_min, pgd_steps=pgd_steps,
                         order=order, hessian=hessian, arch_start_epoch=arch_start_epoch)
