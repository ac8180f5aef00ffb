"""Datasets by name: ``load("mnist", "train")`` -> ``(images, labels)``."""
from wincaffe.errors import DataError

from wincaffe.data.mnist import load_mnist

DATASETS = {
    "mnist": load_mnist,
}


def load(source, split):
    """``(images, labels)`` of dataset ``source``'s ``split``; see the dataset's loader for shapes."""
    try:
        loader = DATASETS[source]
    except (KeyError, TypeError):
        raise DataError(f"unknown dataset {source!r}; known datasets: {', '.join(sorted(DATASETS))}") from None
    return loader(split)
