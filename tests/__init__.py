"""castbook's test suite.

Imported before tests/conftest.py and any test module, so what is set here holds for every
import that follows: one thread per numeric library (torch, numpy's BLAS) in every test
process and in every process a test starts (they inherit the environment), unless the
caller chose otherwise. `scripts/test.sh` runs three test processes on two cores, and
torch's default of one thread per core then has its threads spin-waiting for a core: a tiny
SD 1.5 run of 22 steps took 33 s of CPU with two threads on the loaded machine and 2 s with
one. No result depends on the thread count.
"""

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
