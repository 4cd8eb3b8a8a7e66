import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# Tests are timed against 2 cores; more threads only add contention there. Under pytest-xdist (make test
# runs two workers, one per core) each worker and the scripts it starts keep to one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")
# The suite runs subprocesses beside itself: idle OpenMP threads that sleep instead of spinning keep two
# torch processes on two cores from stalling each other (README "Tests and benchmarks").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ---------------------------------------------------------------------------
# Shared fixtures (supernet tests)
# ---------------------------------------------------------------------------
import pytest  # noqa: E402


@pytest.fixture
def record_cell_weights():
    """``record(model)`` -> a list that collects ``(cell type, EdgeWeights)`` for every search-cell
    call of ``model``, seen through forward pre-hooks (the cell's last positional argument is its
    EdgeWeights). The hooks are removed when the test ends."""
    from darts.spaces.darts_cnn.supernet import SearchCell
    from darts.spaces.nb201.supernet import NB201SearchCell

    handles = []

    def record(model):
        seen = []
        for module in model.modules():
            if isinstance(module, (SearchCell, NB201SearchCell)):
                cell_type = "reduce" if getattr(module, "reduction", False) else "normal"
                handles.append(module.register_forward_pre_hook(
                    lambda m, args, cell_type=cell_type: seen.append((cell_type, args[-1]))))
        return seen

    yield record
    for handle in handles:
        handle.remove()
