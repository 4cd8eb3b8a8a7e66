"""What a search is drifting into: the dominant Hessian eigenvalue of a loss, and what a cell is made of.

RobustDARTS (Zela et al., 2020) tracks the dominant eigenvalue of the Hessian of the validation loss
with respect to the architecture parameters; it grows as a search drifts into cells of skip
connections. Their code builds the full Hessian, which only small spaces afford; here power
iteration on Hessian-vector products (double backward), with the exact spectrum as the reference
for small problems.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from darts.ops import build_op


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def dominant_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], iters: int = 20,
                        tol: float = 1e-4, seed: int = 0) -> float:
    """The eigenvalue of largest magnitude of the Hessian of ``loss_fn()`` with respect to ``params``.

    Power iteration: ``v <- H v / |H v|`` from a seeded random start (its own generator: the global
    RNG is left alone, so a run's other draws do not move), ``lambda = v . H v``, until ``lambda``
    changes by less than ``tol`` relative to itself or after ``iters`` products. The loss and its
    gradient graph are built once; each iteration is one Hessian-vector product.
    """
    params = list(params)
    if not params or any(not p.requires_grad for p in params):
        raise ValueError("dominant_eigenvalue needs a non-empty sequence of tensors that require grad")
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    flat_grad = _flat(grads)
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(flat_grad.numel(), generator=generator, dtype=torch.float64)
    vector = (vector / vector.norm()).to(flat_grad.device, flat_grad.dtype)
    eigenvalue = None
    for _ in range(max(1, iters)):
        product = _flat(torch.autograd.grad(flat_grad, params, grad_outputs=vector, retain_graph=True))
        estimate = float(torch.dot(vector, product))
        norm = product.norm()
        if float(norm) == 0.0:
            return 0.0
        vector = product / norm
        if eigenvalue is not None and abs(estimate - eigenvalue) <= tol * max(abs(estimate), 1e-12):
            return estimate
        eigenvalue = estimate
    return eigenvalue


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
