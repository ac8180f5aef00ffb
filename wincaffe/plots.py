"""PNG plots with matplotlib (the ``plots`` install extra), written atomically.

Each function takes plain numbers and a path; none is needed for training, so a
missing matplotlib is one warning, not an error.
"""
import io
import textwrap
import warnings

from wincaffe.fileio import atomic_write


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


def _wrap(text, width=60):
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _zoom(ax, values, dense_values):
    """A y-range that shows the retrained accuracies near their dense accuracy."""
    top = max(dense_values + values)
    low = max(min(values), min(dense_values) - 0.02)
    ax.set_ylim(100 * low - 0.1, 100 * top + 0.1)


def accuracy_vs_rate(path, series):
    """Liu & Turakhia, Fig. 8 for every method: test accuracy against pruning rate,
    pruned (dashed, open markers) and retrained (solid); left the full range, right a
    zoom on the retrained accuracies. ``series``: {name: {title, rate, pruned, retrained, dense}}."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, (name, s) in enumerate(series.items()):
        color = f"C{i % 10}"
        x = [100 * r for r in s["rate"]]
        ax.plot(x, [100 * a for a in s["pruned"]], ls="--", marker="o", mfc="none", ms=4, color=color)
        ax.plot(x, [100 * a for a in s["retrained"]], marker="o", ms=4, color=color, label=_wrap(s["title"]))
        zoom.plot(x, [100 * a for a in s["retrained"]], marker="o", ms=4, color=color)
        zoom.axhline(100 * s["dense"], color=color, lw=0.8, ls=":")
    ax.set_title("dashed: pruned, before retraining; solid: after retraining")
    zoom.set_title("after retraining (dotted: each method's dense accuracy)")
    for a in (ax, zoom):
        a.set_xlabel("pruning rate (%)")
        a.set_ylabel("test accuracy (%)")
        a.grid(alpha=0.3)
    _zoom(zoom, [v for s in series.values() for v in s["retrained"]], [s["dense"] for s in series.values()])
    fig.tight_layout()
    fig.legend(loc="upper center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 0.0))   # below the axes
    save_figure(fig, path)
    plt.close(fig)
    return path


def accuracy_vs(path, series, key, xlabel, *, log=False):
    """Retrained test accuracy against ``key`` (density: Liu et al., Fig. 2; or multiplies:
    the trade-off frontier), one line per method."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for i, (name, s) in enumerate(series.items()):
        x = s[key] if key != "density" else [100 * d for d in s[key]]
        ax.plot(x, [100 * a for a in s["retrained"]], marker="o", ms=4, color=f"C{i % 10}",
                label=_wrap(s["title"] + (f" [{s['count']}]" if key == "mults" else ""), 50))
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel + (" (%)" if key == "density" else ""))
    ax.set_ylabel("test accuracy after retraining (%)")
    _zoom(ax, [v for s in series.values() for v in s["retrained"]], [s["dense"] for s in series.values()])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    save_figure(fig, path)
    plt.close(fig)
    return path


def weight_histograms(path, panels):
    """Liu & Turakhia, Figs. 3–7: the distribution of transform-domain weight magnitudes,
    dense and after pruning and retraining (nonzero entries). ``panels``: [(title, hist)]
    with hist = {edges, dense, retrained, retrained_zeros}."""
    plt = _pyplot()
    if plt is None:
        return None
    n = len(panels)
    cols = 2 if n > 1 else 1
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, h) in zip(axes.flat, panels):
        edges = h["edges"]
        ax.stairs(h["dense"], edges, fill=True, alpha=0.35, color="C0", label="dense")
        ax.stairs(h["retrained"], edges, color="C3", lw=1.5,
                  label=f"pruned + retrained ({h['retrained_zeros']:,} zeros not shown)")
        ax.set_title(_wrap(title, 70), fontsize=9)
        ax.set_xlabel("|weight| in its domain")
        ax.set_ylabel("entries")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
