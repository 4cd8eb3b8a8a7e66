import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# Tests are timed against 2 cores; more threads only add contention there.
os.environ.setdefault("OMP_NUM_THREADS", "2")
