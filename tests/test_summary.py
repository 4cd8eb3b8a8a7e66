"""`python -m darts.summary` (the end of `make demo`) on a recorded search and final run."""
import json

import pytest

from darts.summary import main, summarise

MACHINE = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "torch": "2.14.1", "threads": 2, "cpu_capability": "AVX512",
           "load_1min": 0.2, "gpu": None}
GENOTYPE = ("Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=[2], reduce=[('max_pool_3x3', 0)], "
            "reduce_concat=[2])")


def write_run(run_dir, results, batch_size=None):
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(results))
    if batch_size is not None:
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(f"search:\n  batch_size: {batch_size}\n")
    return run_dir


def recorded_pair(tmp_path, device="cpu", peak=True):
    search = {"genotype_string": GENOTYPE, "wall_time_s": 80.0, "epochs_run": 3, "steps_per_epoch": 20,
              "alpha_eval_acc": 74.41, "machine": MACHINE, "device": device}
    final = {"wall_time_s": 461.0, "epochs": 5, "images_per_s": 513.4, "test_top1": 91.95, "test_top5": 99.92,
             "params_m": 0.166, "multiply_adds": 6_780_000, "device": device}
    if peak:
        search["peak_memory_mb"], final["peak_memory_mb"] = 1_180.4, 2_512.6
    return write_run(tmp_path / "search", search, batch_size=64), write_run(tmp_path / "final", final)


def test_summary_reports_each_phase_time_rate_accuracy_and_peak_memory(tmp_path):
    lines = summarise(*recorded_pair(tmp_path)).splitlines()
    field = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines[1:]}
    assert field["machine"] == "Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1, 2 threads, AVX512, load 0.2"
    # 3 epochs x 20 steps x 64 images in 80 s.
    assert field["search"] == "1:20 wall time (80 s), 3 epochs, 48 weight images/s, alpha-split accuracy 74.41 %"
    assert field["final training"] == "7:41 wall time (461 s), 5 epochs, 513 images/s"
    assert field["test accuracy"] == "top-1 91.95 %, top-5 99.92 %"
    assert field["peak memory"] == ("1,180 MB (process resident set) search, "
                                    "2,513 MB (process resident set) final training")
    assert field["total wall time"] == "9:01"


def test_summary_names_gpu_memory_and_tolerates_runs_without_the_record(tmp_path):
    lines = summarise(*recorded_pair(tmp_path / "gpu", device="cuda:0")).splitlines()
    assert "peak memory:          1,180 MB (GPU, allocated) search, 2,513 MB (GPU, allocated) final training" in lines
    older = summarise(*recorded_pair(tmp_path / "old", peak=False)).splitlines()
    assert "peak memory:          — search, — final training" in older


def test_summary_of_a_run_that_did_not_finish_is_one_clear_error(tmp_path):
    search, final = recorded_pair(tmp_path)
    (final / "results.json").unlink()
    with pytest.raises(SystemExit, match="results.json is missing: did that run finish"):
        main([str(search), str(final)])
