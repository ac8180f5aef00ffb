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
# at 2 threads took 62.8 ms with the defaults and 21.4 ms with these two settings.
# They must be set before NumPy / libgomp load; a value in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from wincaffe.errors import ConfigError, DataError, SnapshotError, TrainingError, WincaffeError  # noqa: F401
from wincaffe.layer import TEST, TRAIN, Blob, Layer, Param, register  # noqa: F401
