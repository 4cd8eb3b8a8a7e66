"""darts: differentiable architecture search (see README.md).

Importing the package sets one process default before torch loads its OpenMP runtime:
``OMP_WAIT_POLICY=PASSIVE`` unless the environment already says otherwise. With the default (spinning)
policy, torch's idle OpenMP threads busy-wait for the next parallel region; when any other process
shares the cores (a test runner, a second run, a cloud neighbour), the spinning threads and the
working ones take turns on the cores and every step slows several-fold. Measured on a 2-core machine
beside one other busy process (``bench/final_step.py --C 16 --layers 6 --batch 64``): 2.7-8.0 s per step
spinning, 0.66-0.74 s passive. OpenMP reads the variable once, when torch is first imported, so it
only applies where darts is imported before torch (the scripts, the tests, the benchmarks).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
