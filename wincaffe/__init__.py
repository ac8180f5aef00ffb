"""wincaffe: a small, fast, Caffe-style framework for fast-convolution research.

Core objects: :class:`~wincaffe.net.Net`, :class:`~wincaffe.solver.Solver`,
the layer interface in :mod:`wincaffe.layer`. Layer types live in the ``layers``
package and register themselves.
"""
__version__ = "0.1.0"

from wincaffe.errors import ConfigError, DataError, SnapshotError, TrainingError, WincaffeError  # noqa: F401
from wincaffe.layer import TEST, TRAIN, Blob, Layer, Param, register  # noqa: F401
