"""The benchmarks run end to end on tiny networks and report what README promises."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import final_step  # noqa: E402
import search_step  # noqa: E402

TINY = ["--C", "4", "--layers", "3", "--batch", "2", "--steps", "1", "--warmup", "0", "--device", "cpu"]
REPORTED = {"ms_per_step", "images_per_s", "peak_mem_mb"}


@pytest.mark.parametrize("order", [1, 2])
def test_search_step_benchmark_times_and_checks_the_fast_path(order):
    result = search_step.main(TINY + ["--order", str(order)])
    assert REPORTED <= result.keys() and result["ms_per_step"] > 0 and result["path"] == "fast"
    assert result["check_passed"], result
    assert result["paper_search_hours"] > 0


def test_final_step_benchmark_times_and_checks_the_fast_path():
    result = final_step.main(TINY)
    assert REPORTED <= result.keys() and result["check_passed"], result


# A stand-in for the original code's interface, calling .cuda() as the original does.
STAND_IN_MODEL = """
import torch, torch.nn as nn
class Network(nn.Module):
    def __init__(self, C, num_classes, layers, criterion):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1).cuda()
        self.head = nn.Linear(C, num_classes)
        self.alphas = (1e-3 * torch.randn(2, 3).cuda()).requires_grad_()
        self._criterion = criterion
    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)) * self.alphas.softmax(-1).sum())
    def arch_parameters(self):
        return [self.alphas]
"""
STAND_IN_ARCHITECT = """
import torch
class Architect:
    def __init__(self, model, args):
        self.model = model
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=args.arch_learning_rate)
    def step(self, x, y, x_search, y_search, eta, optimizer, unrolled):
        self.optimizer.zero_grad()
        self.model._criterion(self.model(x_search), y_search).backward()
        self.optimizer.step()
"""


def test_original_step_benchmark_runs_the_original_interface_on_the_cpu(tmp_path):
    for name, text in [("model_search.py", STAND_IN_MODEL), ("architect.py", STAND_IN_ARCHITECT),
                       ("operations.py", ""), ("genotypes.py", "")]:
        (tmp_path / name).write_text(textwrap.dedent(text))
    # In its own interpreter: it patches .cuda() for the process.
    run = subprocess.run([sys.executable, str(BENCH / "original_step.py"), "--original", str(tmp_path), *TINY,
                          "--json"], capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["path"] == "original" and REPORTED <= result.keys() and result["ms_per_step"] > 0


def test_original_step_benchmark_names_a_wrong_folder(tmp_path):
    run = subprocess.run([sys.executable, str(BENCH / "original_step.py"), "--original", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: --original {tmp_path} is not the original")
