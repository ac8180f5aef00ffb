"""PNG plots with matplotlib (the ``plots`` install extra), written atomically.

Each function takes plain numbers and a path; none is needed for training, so a
missing matplotlib is one warning, not an error.
"""
import io
import warnings

from wincaffe.snapshot import atomic_write


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed (pip install -e \".[plots]\"): no plot written",
                      RuntimeWarning, stacklevel=3)
        return None
    return plt


def save_figure(fig, path):
    """Write ``fig`` as a PNG to ``path`` atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    fig.clf()
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def sensitivity_plot(path, rates, curves, dense, title):
    """Test accuracy against pruning rate, one line per layer (pruned alone, no
    retraining), with the dense accuracy as a dashed line. ``curves``: {name: [acc]}.
    Returns the path, or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, accs in curves.items():
        ax.plot([100 * r for r in rates], [100 * a for a in accs], marker="o", ms=4, label=name)
    ax.axhline(100 * dense, color="0.4", ls="--", lw=1, label=f"dense ({100 * dense:.2f}%)")
    ax.set_xlabel("pruning rate of the layer alone (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    lo = min(min(a) for a in curves.values()) if curves else dense
    ax.set_ylim(max(0.0, 100 * lo - 2), 100.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
    return path
