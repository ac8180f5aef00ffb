"""Snapshots: weights and solver state as ``.npz`` files.

Written atomically (a temp file in the same folder, fsync, then ``os.replace``),
so a crash mid-write never leaves a truncated snapshot under the final name.
Read with ``allow_pickle=False``: a snapshot holds arrays and strings only.

Weights file keys: ``param/<layer>/<i>`` (data), ``mask/<layer>/<i>`` (masks,
when set), ``buffer/<layer>/<name>`` (layer buffers: model arrays that are not
learned, such as a transform-domain mask) and ``const/<layer>/<name>`` (integers
the weights depend on, such as an FFT size: ``Layer.model_constants``; a file
whose constants differ from the net's is refused). Solver-state keys: ``iter``, ``history/<k>/<layer>/<i>``,
``rng/<net>``, ``layer/<net>/<layer>/<name>``, ``weights`` (the weights file).
"""
import zipfile

import numpy as np

from wincaffe.errors import ConfigError, SnapshotError
from wincaffe.fileio import atomic_write, atomic_write_all


def save_npz(path, arrays):
    """Write ``arrays`` (name -> array) to ``path`` atomically."""
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def save_npz_pair(first, second):
    """Write two ``(path, arrays)`` files as a pair: both land, or neither does."""
    atomic_write_all([(p, (lambda a: lambda fh: np.savez(fh, **a))(arrays)) for p, arrays in (first, second)])


def load_npz(path):
    """Read every array of an ``.npz`` into a dict, refusing pickled objects."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise SnapshotError(f"{path}: a single .npy array, not an .npz snapshot")
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise SnapshotError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SnapshotError(f"{path}: a folder, not a weights file") from None
    except (zipfile.BadZipFile, EOFError) as exc:
        raise SnapshotError(f"{path}: not a readable .npz snapshot: damaged or truncated ({exc})") from None
    except ValueError:       # NumPy's "pickled data ... allow_pickle=False" for any other bytes
        raise SnapshotError(f"{path}: not a wincaffe weights or solver-state file (not an .npz archive of "
                            "plain arrays)") from None
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise SnapshotError(f"{path}: entry '{key}' is not a NumPy array")
    return arrays


def _numeric(path, key, array, shape):
    """``array`` if it is a number array of ``shape``, else a SnapshotError naming ``key``."""
    if array.dtype.kind not in "biuf":
        raise SnapshotError(f"{path}: entry '{key}' holds {array.dtype} data, not numbers")
    if array.shape != shape:
        raise SnapshotError(f"{path}: entry '{key}' has shape {array.shape}, the net needs {shape}")
    return array


def weights_arrays(net):
    """The arrays of a weights file for ``net`` (views of the net's arrays, not copies)."""
    out = {}
    for layer in net.layers:
        for i, p in enumerate(layer.params):
            out[f"param/{layer.name}/{i}"] = p.data
            if p.mask is not None:
                out[f"mask/{layer.name}/{i}"] = p.mask
        for name, arr in layer.buffers.items():
            out[f"buffer/{layer.name}/{name}"] = arr
        for name, (value, _) in layer.model_constants().items():
            out[f"const/{layer.name}/{name}"] = np.asarray(value, dtype=np.int64)
    return out


def save_weights(net, path):
    save_npz(path, weights_arrays(net))


def load_weights(net, path, *, strict=False):
    """Copy the weights (and masks) in ``path`` into ``net``'s params, by layer name.

    Layers of the net missing from the file keep their values (as Caffe's
    ``--weights``: fine-tuning from a different net); with ``strict`` that is an
    error. A shape mismatch is always an error naming the layer.
    Returns the number of params loaded."""
    return load_weights_arrays(net, load_npz(path), path, strict=strict)


def load_weights_arrays(net, arrays, path="weights", *, strict=False):
    """:func:`load_weights` from a dict of arrays (as :func:`weights_arrays` gives);
    ``path`` names the source in errors."""
    for layer in net.layers:   # constants first: a different FFT size explains every shape below
        masks_here = any(k.startswith((f"mask/{layer.name}/", f"buffer/{layer.name}/")) for k in arrays)
        for name, (value, field) in layer.model_constants().items():
            key = f"const/{layer.name}/{name}"
            if key in arrays and not np.array_equal(arrays[key], np.asarray(value)):
                raise SnapshotError(f"{path}: layer '{layer.name}' ({layer.type_name}): {field} is "
                                    f"{arrays[key].tolist()} in the file but {list(np.asarray(value).tolist())} "
                                    f"in the net")
            if key not in arrays and masks_here:   # masks whose shape may fit by chance (Fw 12 and 13)
                raise SnapshotError(f"{path}: layer '{layer.name}' ({layer.type_name}): the file has masks but "
                                    f"no {field} to check them against (written by another version or net?)")
    loaded = 0
    for layer in net.layers:
        for i, p in enumerate(layer.params):
            key = f"param/{layer.name}/{i}"
            if key not in arrays:
                if strict:
                    raise SnapshotError(f"{path}: no weights for layer '{layer.name}' param {i}")
                continue
            src = arrays[key]
            if src.shape != p.data.shape:
                raise SnapshotError(f"{path}: layer '{layer.name}' param {i} has shape {src.shape} "
                                    f"in the file but {p.data.shape} in the net")
            p.data[...] = _numeric(path, key, src, p.data.shape)
            mkey = f"mask/{layer.name}/{i}"
            p.set_mask(_numeric(path, mkey, arrays[mkey], p.data.shape) if mkey in arrays else None)
            loaded += 1
        for name, buf in layer.buffers.items():
            key = f"buffer/{layer.name}/{name}"
            if key not in arrays:
                continue  # e.g. a mask that was never set: the layer's default stays
            if arrays[key].shape != buf.shape:
                raise SnapshotError(f"{path}: layer '{layer.name}' buffer '{name}' has shape {arrays[key].shape} "
                                    f"in the file but {buf.shape} in the net")
            buf[...] = _numeric(path, key, arrays[key], buf.shape)
    if loaded == 0 and any(l.params for l in net.layers):
        raise SnapshotError(f"{path}: none of its weights match a layer of net '{net.name}'")
    for layer in net.layers:
        try:
            layer.check_loaded()
        except ConfigError as exc:
            raise SnapshotError(f"{path}: {exc}") from None
    return loaded
