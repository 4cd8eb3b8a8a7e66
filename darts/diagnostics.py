"""What a search is drifting into: the dominant Hessian eigenvalue of a loss, and what a cell is made of.

RobustDARTS (Zela et al., 2020) tracks the dominant eigenvalue of the Hessian of the validation loss
with respect to the architecture parameters; it grows as a search drifts into cells of skip
connections. Their code builds the full Hessian, which only small spaces afford; here power
iteration on Hessian-vector products (double backward), with the exact spectrum as the reference
for small problems.
"""
from __future__ import annotations

import hashlib
import json
from typing import Callable, Sequence

import torch

from darts.errors import DartsError
from darts.ops import build_op


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _power_iteration(hvp: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, iters: int, tol: float,
                     shift: float = 0.0) -> float:
    """The eigenvalue of largest magnitude of ``H - shift * I`` by power iteration from ``start``."""
    vector, eigenvalue = start, None
    for _ in range(max(1, iters)):
        product = hvp(vector) - shift * vector
        estimate = float(torch.dot(vector, product))
        norm = product.norm()
        if float(norm) == 0.0:
            return 0.0
        vector = product / norm
        if eigenvalue is not None and abs(estimate - eigenvalue) <= tol * max(abs(estimate), 1e-12):
            return estimate
        eigenvalue = estimate
    return eigenvalue


def dominant_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], iters: int = 20,
                        tol: float = 1e-4, seed: int = 0) -> float:
    """The largest eigenvalue of the Hessian of ``loss_fn()`` with respect to ``params`` (what
    RobustDARTS reports: ``max(eigvals(H))``).

    Power iteration: ``v <- H v / |H v|`` from a seeded random start (its own generator: the global
    RNG is left alone, so a run's other draws do not move), ``lambda = v . H v``, until ``lambda``
    changes by less than ``tol`` relative to itself or after ``iters`` products. That finds the
    eigenvalue of largest magnitude; when it is negative, a second pass on ``H - lambda I`` (whose
    spectrum is shifted to be non-negative) finds the largest. The loss and its gradient graph are
    built once; each iteration is one Hessian-vector product.
    """
    params = list(params)
    if not params or any(not p.requires_grad for p in params):
        raise ValueError("dominant_eigenvalue needs a non-empty sequence of tensors that require grad")
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    flat_grad = _flat(grads)

    def hvp(vector: torch.Tensor) -> torch.Tensor:
        return _flat(torch.autograd.grad(flat_grad, params, grad_outputs=vector, retain_graph=True))

    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(flat_grad.numel(), generator=generator, dtype=torch.float64)
    start = (start / start.norm()).to(flat_grad.device, flat_grad.dtype)
    largest_magnitude = _power_iteration(hvp, start, iters, tol)
    if largest_magnitude >= 0:
        return largest_magnitude
    return largest_magnitude + _power_iteration(hvp, start, iters, tol, shift=largest_magnitude)


def hessian_eigenvalues(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Every eigenvalue (ascending, float64) of the exact Hessian of ``loss_fn()`` with respect to
    ``params``, built column by column from one Hessian-vector product per parameter entry: the
    exact computation for small spaces (NAS-Bench-201's 30 alphas, DARTS's 224) and the reference
    the power iteration is tested against."""
    params = list(params)
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    flat_grad = _flat(grads)
    size = flat_grad.numel()
    columns = []
    for index in range(size):
        basis = torch.zeros(size, device=flat_grad.device, dtype=flat_grad.dtype)
        basis[index] = 1.0
        columns.append(_flat(torch.autograd.grad(flat_grad, params, grad_outputs=basis, retain_graph=True)))
    hessian = torch.stack(columns, dim=1).double()
    return torch.linalg.eigvalsh(0.5 * (hessian + hessian.T))


def is_parameter_free(op: str) -> bool:
    """Whether the op (as the final network builds it, stride 1) has no parameters: ``none``, the
    pools, ``skip_connect``."""
    return not any(True for _ in build_op(op, 4, 1, affine=True).parameters())


def cell_op_counts(graph) -> dict[str, int]:
    """Skip connections and parameter-free ops among a cell's op edges (a ``CellGraph``): the
    collapse signals DARTS+ and RobustDARTS watch in the normal cell."""
    ops = [op for _, _, op in graph.edges]
    return {"skip_connects": ops.count("skip_connect"),
            "parameter_free_ops": sum(is_parameter_free(op) for op in ops)}


def normal_cell_counts(genotype) -> dict[str, int]:
    """:func:`cell_op_counts` of a genotype's normal cell (a space with one cell type: that cell)."""
    graphs = genotype.cell_graphs()
    return cell_op_counts(graphs.get("normal") or next(iter(graphs.values())))


def ranking_digest(weights: dict[str, torch.Tensor], edge_ops: dict[str, Sequence[Sequence[str]]]) -> str:
    """A short digest of the order of the parametric ops' weights on every edge of every cell
    (weights {cell: (edges, ops)}; ``edge_ops`` {cell: each edge's op names by column}, as
    ``SearchSpace.edge_ops()`` gives them; ties by column): equal digests mean the same ranking
    (DARTS+'s stability criterion)."""
    order = {}
    for cell, cell_weights in sorted(weights.items()):
        order[cell] = [sorted((k for k, op in enumerate(ops) if not is_parameter_free(op)),
                              key=lambda k: (-float(row[k]), k))
                       for row, ops in zip(cell_weights, edge_ops[cell])]
    return hashlib.sha1(json.dumps(order).encode()).hexdigest()[:12]


EIGENVALUE_METHODS = ("power", "exact")


class EigenvalueProbe:
    """When and how a search measures the dominant eigenvalue (``diagnostics`` config).

    Due at every epoch divisible by ``diagnostics.eigenvalue_every`` or by the early-stopping
    rule's own interval, and at the last epoch (as RobustDARTS measures); never when both are 0.
    ``power``: :func:`dominant_eigenvalue`; ``exact``: the largest eigenvalue of the full Hessian
    (what RobustDARTS takes, ``max(eigvals(H))``; small spaces only)."""

    def __init__(self, cfg, rule_every: int, epochs: int):
        self.intervals = [k for k in (int(cfg.get("eigenvalue_every", 0) or 0), int(rule_every)) if k > 0]
        self.method = cfg.get("eigenvalue_method", "power")
        if self.method not in EIGENVALUE_METHODS:
            raise DartsError(f"unknown diagnostics.eigenvalue_method {self.method!r}; "
                             f"valid choices: {', '.join(EIGENVALUE_METHODS)}")
        self.iters, self.tol = int(cfg.get("eigenvalue_iters", 20)), float(cfg.get("eigenvalue_tol", 1e-4))
        self.epochs = epochs

    def due(self, epoch: int) -> bool:
        return bool(self.intervals) and (epoch == self.epochs - 1 or any(epoch % k == 0 for k in self.intervals))

    def measure(self, loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]) -> float:
        if self.method == "exact":
            return float(hessian_eigenvalues(loss_fn, params)[-1])
        return dominant_eigenvalue(loss_fn, params, iters=self.iters, tol=self.tol)
