"""wincaffe: a small, fast, Caffe-style framework for fast-convolution research.

Core objects: :class:`~wincaffe.net.Net`, :class:`~wincaffe.solver.Solver`,
the layer interface in :mod:`wincaffe.layer`. Layer types live in the ``layers``
package and register themselves.
"""
__version__ = "0.1.0"

import os as _os

# Thread pools that spin while idle (libgomp for our kernels, OpenBLAS for GEMMs)
# fight each other and any other process on a small machine: measured on the
# 2-core reference machine with one core busy elsewhere, LeNet-5 forward+backward
# at 2 threads took 62.8 ms with the defaults and 21.4 ms with PASSIVE and a short
# OpenBLAS timeout. Fully passive threads sleep after every parallel region, and
# waking one cost ~130 µs per region here, so libgomp spins a little first
# (GOMP_SPINCOUNT=10000, about 100 µs by libgomp's estimate; LLVM's OpenMP ignores
# it and stays passive):
# 2 threads, idle machine, LeNet-5 19.7 → 17.9 ms, the Winograd net 15.4 → 11.3 ms;
# one core busy elsewhere, no slower than passive (33.9 vs 37.6 ms, 25.5 vs 25.0).
# They must be set before NumPy / libgomp load; a value in the environment wins
# (either OpenMP variable set by the user leaves both OpenMP settings to the user).
# If NumPy was imported first, its OpenBLAS threads (started with a 0.1 s idle spin)
# are restarted to take the timeout, when no other Python thread could be in BLAS
# (wincaffe.threads.restart_openblas_threads; at 2 threads on 2 cores, medians of 5
# runs: the Winograd net 21.5 ms per iteration without the restart, 12.2 with it).
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _os.environ["GOMP_SPINCOUNT"] = "10000"
if "OPENBLAS_THREAD_TIMEOUT" not in _os.environ:
    _os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
    import sys as _sys
    import threading as _threading
    if "numpy" in _sys.modules and _threading.active_count() == 1:
        from wincaffe.threads import restart_openblas_threads
        restart_openblas_threads()

from wincaffe.errors import ConfigError, DataError, SnapshotError, TrainingError, WincaffeError  # noqa: F401
from wincaffe.layer import TEST, TRAIN, Blob, Layer, Param, register  # noqa: F401
