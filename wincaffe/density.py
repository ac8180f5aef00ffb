"""Activation density at the point of multiplication, measured on real batches.

Each layer that multiplies reports, right after its forward, the fraction of its
inputs that are nonzero where the products happen (``Layer.activation_density``):
the spatial input of a direct convolution, V = Bᵀ d B of a Winograd layer (after
the Winograd-ReLU where there is one). Liu et al., Fig. 3 plot these per layer as
mean ± one standard deviation; so does :func:`activation_densities`.
"""
import numpy as np


def activation_densities(net, iterations, *, rewind=True):
    """[{name, type, domain, mean, std, batches}] per layer that reports a density,
    over ``iterations`` forward passes of ``net`` (its data layers rewound first)."""
    if rewind:
        for layer in net.layers:
            layer.rewind()
    seen = {}

    def observe(layer, bottoms, tops):
        got = layer.activation_density(bottoms)
        if got is not None:
            seen.setdefault(layer.name, (layer, got[0], []))[2].append(got[1])
    for _ in range(iterations):
        net.forward(observe=observe)
    return [{"name": name, "type": layer.type_name, "domain": domain,
             "mean": float(np.mean(values)), "std": float(np.std(values)), "batches": len(values)}
            for name, (layer, domain, values) in seen.items()]
