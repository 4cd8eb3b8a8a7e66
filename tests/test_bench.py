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


def test_final_step_benchmark_times_the_demo_network_with_and_without_shared_edges():
    # make demo's final network: one channel, 28x28 halved by the stem, no auxiliary head, no drop path.
    demo = TINY + ["--in-channels", "1", "--image-size", "28", "--stem-stride", "2", "--no-auxiliary",
                   "--drop-path", "0"]
    for flags, path in (([], "fast"), (["--no-shared-edges"], "fast, no shared edges")):
        result = final_step.main(demo + flags)
        assert result["path"] == path and result["check_passed"], result


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


RECORDED_MACHINE = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1", "threads": 2, "interop_threads": 2,
                    "cpu_capability": "AVX512", "omp_num_threads": "2", "load_1min": 0.1, "gpu": None}
# As the scripts printed them (--json), trimmed to the fields the table reads.
RECORDED = [
    {"path": "original", "order": 1, "batch": 32, "device": "cpu", "ms_per_step": 6563.0, "images_per_s": 4.9,
     "peak_mem_mb": 5488.0, "paper_search_hours": 71.2},
    {"path": "baseline", "order": 1, "batch": 32, "device": "cpu", "ms_per_step": 6580.0, "images_per_s": 4.9,
     "peak_mem_mb": 5487.0, "paper_search_hours": 71.4, "check_passed": True},
    {"path": "fast", "order": 1, "batch": 32, "device": "cpu", "ms_per_step": 1832.0, "images_per_s": 17.5,
     "peak_mem_mb": 4448.0, "paper_search_hours": 19.9, "check_passed": True},
    {"path": "fast", "batch": 96, "device": "cpu", "ms_per_step": 4024.0, "images_per_s": 23.9,
     "peak_mem_mb": 10500.0, "paper_training_hours": 349.0, "check_passed": False},
    {"path": "baseline", "batch": 96, "device": "cpu", "ms_per_step": 6326.0, "images_per_s": 15.2,
     "peak_mem_mb": 10630.0, "paper_training_hours": 548.0, "check_passed": True},
]


def test_bench_table_puts_each_path_in_its_column_and_names_the_machine():
    from table import bench_table

    lines = bench_table(RECORDED, RECORDED_MACHINE).splitlines()
    assert lines[0] == "Machine: AMD EPYC, 2 cores, torch 2.14.1, 2 threads, AVX512, load 0.1"
    search, final = lines[4], lines[5]
    assert search == ("| search step, first order | 32 | cpu | 6,563 | 6,580 | 1,832 | 3.58x | 3.59x | 17.5 "
                      "| 5,488 / 5,487 / 4,448 |")
    assert final == "| final training step | 96 | cpu | — | 6,326 | 4,024 | — | 1.57x | 23.9 | — / 10,630 / 10,500 |"
    assert lines[-1] == "**1 numerical check(s) of the fast path against the baseline failed.**"


def test_run_all_runs_every_benchmark_and_writes_the_table(tmp_path):
    import run_all

    md_path = run_all.main(["--out", str(tmp_path), "--steps", "1", "--warmup", "0", "--search-batch", "2",
                            "--final-batch", "2", "--C", "4", "--layers", "3", "--no-check"])
    recorded = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["path"], r.get("order")) for r in recorded["results"]] == [
        ("baseline", 1), ("fast", 1), ("baseline", 2), ("fast", 2), ("baseline", None), ("fast", None)]
    assert recorded["machine"]["cores"] >= 1
    table = md_path.read_text().splitlines()
    assert [row.split(" | ")[0] for row in table[4:]] == [
        "| search step, first order", "| search step, second order", "| final training step"]


def test_run_all_times_more_steps_at_the_papers_batch_on_a_gpu(tmp_path):
    import run_all

    def plan(*options):
        return [" ".join(run) for run in run_all.planned_runs(run_all.parse(["--out", str(tmp_path), *options]))]

    on_cpu, on_gpu = plan(), plan("--device", "cuda")
    assert on_cpu[0] == "search_step.py --order 1 --batch 32 --device cpu --steps 4 --warmup 1 --json --baseline"
    assert on_gpu[0] == "search_step.py --order 1 --batch 64 --device cuda --steps 20 --warmup 3 --json --baseline"
    assert on_gpu[-1] == "final_step.py --batch 96 --device cuda --steps 20 --warmup 3 --json"
    # What the command line says wins, and options the runner does not know go to every script.
    assert plan("--device", "cuda", "--steps", "5", "--search-batch", "16", "--C", "4")[1] == (
        "search_step.py --order 1 --batch 16 --device cuda --steps 5 --warmup 3 --json --C 4")
