"""Datasets: the on-disk cache, the IDX format, and MNIST.

- :func:`data_dir` -- the cache folder (``$WINCAFFE_DATA`` or ``~/.cache/wincaffe``)
- :func:`fetch_mnist` -- make sure the verified MNIST IDX files are cached
- :func:`load_mnist` -- ``(images uint8 (N,1,28,28), labels uint8 (N,))``
- :func:`load` -- the same, by dataset name
- :mod:`wincaffe.data.idx` -- :func:`~wincaffe.data.idx.read_idx`, :func:`~wincaffe.data.idx.write_idx`
"""
from wincaffe.data.cache import data_dir
from wincaffe.data.mnist import fetch_mnist, load_mnist
from wincaffe.data.registry import DATASETS, load

__all__ = ["data_dir", "fetch_mnist", "load_mnist", "load", "DATASETS"]
