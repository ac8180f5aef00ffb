"""The layer interface and the registry of layer types.

A layer type is a subclass of :class:`Layer` decorated with ``@register("Type")``.
Concrete layers live in the ``layers`` package (and in any package that
advertises an entry point in the ``wincaffe.layers`` group); the core never
imports one by name: :func:`layer_class` loads the plugins on first use.

Life cycle, as in Caffe::

    layer = LayerClass(spec, phase=..., dtype=..., rng=...)
    layer.setup(bottoms, tops)      # check the configuration, create params
    layer.reshape(bottoms, tops)    # size the tops (called whenever bottoms change)
    layer.forward(bottoms, tops)    # tops[i].data from bottoms[j].data
    layer.backward(tops, propagate_down, bottoms)
                                    # bottoms[j].diff (where propagate_down[j])
                                    # and param.diff from tops[i].diff

``backward`` *writes* (does not accumulate) bottom and parameter diffs; the net
takes care of blobs that feed several layers.
"""
import importlib
import pkgutil
import warnings
from importlib import metadata

import numpy as np

from wincaffe.errors import ConfigError

TRAIN, TEST = "TRAIN", "TEST"


# The largest array a layer may ask for (elements): far beyond any net this framework
# trains, and a clear ConfigError instead of an allocation that takes the machine down.
MAX_ELEMENTS = 2 ** 31


def check_size(shape, what):
    """A ConfigError unless ``shape`` has nonnegative sides and at most MAX_ELEMENTS entries."""
    if any(int(s) < 0 for s in shape):
        raise ConfigError(f"{what} would have a negative size {tuple(shape)}")
    n = 1
    for s in shape:
        n *= int(s)
    if n > MAX_ELEMENTS:
        raise ConfigError(f"{what} would need {n:,} elements {tuple(int(s) for s in shape)} "
                          f"(more than {MAX_ELEMENTS:,}): check the sizes in the net")


class Blob:
    """A named array and its gradient, both shaped like the blob, e.g. (N, C, H, W)."""

    __slots__ = ("name", "data", "diff")

    def __init__(self, name, dtype=np.float32):
        self.name = name
        self.data = np.zeros(0, dtype)
        self.diff = np.zeros(0, dtype)

    @property
    def shape(self):
        return self.data.shape

    def reshape(self, shape, dtype=None):
        """Give data and diff this shape; keeps the buffers when nothing changes."""
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype or self.data.dtype)
        if self.data.shape != shape:
            check_size(shape, f"blob '{self.name}'")
        if self.data.shape != shape or self.data.dtype != dtype:
            self.data = np.zeros(shape, dtype)
        if self.diff.shape != shape or self.diff.dtype != dtype:
            self.diff = np.zeros(shape, dtype)

    def __repr__(self):
        return f"Blob({self.name!r}, shape={self.shape})"


class Param:
    """A learnable parameter: ``data``, its gradient ``diff``, an optional ``mask``
    and an optional ``preconditioner``.

    ``diff`` is always the gradient dL/d(data), as back-propagation computes it.

    ``mask`` (same shape, 0/1) marks pruned entries: the solver zeroes the masked
    entries of the update and of ``data`` after every step, so pruned weights
    stay exactly zero while the rest is retrained.

    ``preconditioner`` (None, or a callable ``P(diff, out)`` that writes a linear
    map of ``diff`` into ``out``, both shaped like ``data``) is what the solver
    steps along instead of ``diff``: e.g. (G Gᵀ) ∂L/∂Q (G Gᵀ) for Winograd-domain
    weights (the gradient note, eq. 18). See :mod:`wincaffe.solver` for the order.
    """

    __slots__ = ("name", "data", "diff", "mask", "preconditioner", "lr_mult", "decay_mult",
                 "_masked_diff")

    def __init__(self, name, data, lr_mult=1.0, decay_mult=1.0):
        self.name = name
        self.data = data
        self.diff = np.zeros_like(data)
        self.mask = None
        self.preconditioner = None
        self.lr_mult, self.decay_mult = lr_mult, decay_mult
        self._masked_diff = None       # M·diff for the preconditioner, kept between updates

    @property
    def shape(self):
        return self.data.shape

    def set_mask(self, mask):
        """Install a 0/1 mask (or None) and zero the pruned entries of ``data`` now.

        The kept mask is read-only: a write into it in place would leave the newly
        pruned weights at their values (NumPy raises instead); call ``set_mask`` again."""
        if mask is None:
            self.mask = None
            return
        mask = np.asarray(mask)
        if mask.shape != self.data.shape:
            raise ValueError(f"param {self.name}: mask shape {mask.shape} != data shape {self.data.shape}")
        self.mask = (mask != 0).astype(self.data.dtype)
        self.mask.flags.writeable = False
        np.copyto(self.data, 0, where=self.mask == 0)   # exact zeros, even under NaN or inf

    def step_direction(self, out):
        """Write what the solver steps along into ``out``: M·P(M·diff) with the mask M and
        the preconditioner P (either may be absent). Masking before P as well as after
        matters: P is positive semi-definite, so M P M ∇ is a descent direction, while
        M P ∇ can point uphill (it mixes in the gradient of pruned entries)."""
        if self.preconditioner is None:
            np.copyto(out, self.diff)
        elif self.mask is None:
            self.preconditioner(self.diff, out)
        else:
            if self._masked_diff is None or self._masked_diff.shape != self.diff.shape:
                self._masked_diff = np.empty_like(self.diff)
            self.preconditioner(np.multiply(self.diff, self.mask, out=self._masked_diff), out)
        if self.mask is not None:
            out *= self.mask
        return out

    def __repr__(self):
        return f"Param({self.name!r}, shape={self.shape})"


class Layer:
    """Base class for every layer type.

    Class attributes a subclass sets:
      type_name     -- filled in by ``@register``.
      param_blocks  -- ``{"convolution_param": Block(...)}``: the per-type blocks this
                       type accepts (validated by :mod:`wincaffe.config`).
      num_bottoms / num_tops -- exact count, or (min, max) with max None for any.
      is_loss       -- the first top is a loss (default loss_weight 1).
      has_backward  -- False for layers with no gradient (Data, Accuracy).
      in_place      -- True if the layer can write its top into its bottom's blob.

    Instance attributes set by the base class:
      name, spec (the validated layer mapping), phase (TRAIN/TEST), dtype, rng,
      params (list of :class:`Param`, created in ``setup``),
      buffers (name -> array: model state that is not learned, such as a mask on
      transform-domain weights; see :meth:`add_buffer`).
    """

    type_name = None
    param_blocks = {}
    num_bottoms = (0, None)
    num_tops = (0, None)
    is_loss = False
    has_backward = True
    in_place = False       # may a top be one of the bottoms (Caffe's in-place ReLU, Dropout)?

    def __init__(self, spec, *, phase=TRAIN, dtype=np.float32, rng=None):
        self.spec = spec
        self.name = spec["name"]
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.params = []
        self.buffers = {}
        self.workspaces = {}    # scratch arrays; a Net replaces this with one dict shared by its layers

    # ----- helpers for subclasses -------------------------------------------------
    def error(self, message, field=None):
        """A ConfigError that names this layer (and the field, when given)."""
        return ConfigError(message, layer=self.name, layer_type=self.type_name, field=field)

    def add_param(self, suffix, data, index=None):
        """Create a Param with this layer's lr_mult/decay_mult for its index."""
        index = len(self.params) if index is None else index
        mults = self.spec.get("param") or []
        m = mults[index] if index < len(mults) else {}
        p = Param(f"{self.name}/{suffix}", np.ascontiguousarray(data, dtype=self.dtype),
                  lr_mult=m.get("lr_mult", 1.0), decay_mult=m.get("decay_mult", 1.0))
        self.params.append(p)
        return p

    def workspace(self, tag, shape, dtype):
        """A scratch array of ``shape`` and ``dtype`` from the net's pool (``self.workspaces``,
        shared by the layers of one net, which run one at a time; freed with the net).
        Floating-point scratch starts as NaN, so a kernel that fails to write shows up."""
        key = (tag, tuple(int(s) for s in shape), np.dtype(dtype))
        buf = self.workspaces.get(key)
        if buf is None:
            fill = np.nan if np.issubdtype(dtype, np.floating) else 0
            buf = self.workspaces[key] = np.full(shape, fill, dtype)
        return buf

    def add_buffer(self, name, array):
        """Register a non-learnable model array (e.g. a transform-domain pruning mask).

        Buffers are saved in weights files (``buffer/<layer>/<name>``), loaded by
        ``--weights``, and shared by reference between a TRAIN net and its TEST
        net. Change them in place (``self.buffers[name][...] = new``) so every
        net holding the buffer sees the change."""
        self.buffers[name] = np.ascontiguousarray(array, dtype=self.dtype)
        return self.buffers[name]

    def block(self, key):
        """The validated per-type parameter block, e.g. ``self.block("convolution_param")``."""
        return self.spec[key]

    # ----- the interface ----------------------------------------------------------
    def setup(self, bottoms, tops):
        """Check the configuration against the bottom shapes and create params."""

    def reshape(self, bottoms, tops):
        """Size the tops from the bottoms."""
        raise NotImplementedError(f"{type(self).__name__}.reshape")

    def forward(self, bottoms, tops):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, tops, propagate_down, bottoms):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    # ----- optional: non-parameter state kept in snapshots (data cursors ...) -----
    def get_state(self):
        """Arrays to keep in a solver snapshot so a resumed run is bit-identical."""
        return {}

    def set_state(self, state):
        """Restore what :meth:`get_state` returned."""

    # ----- optional: constants a weights file must agree on -----------------------
    def model_constants(self):
        """``{name: (value, field)}``: integers resolved at setup that the saved
        weights depend on (e.g. an FFT size, which fixes every mask's shape). They
        are written to weights files (``const/<layer>/<name>``) and a file whose
        values differ is refused with one line naming the layer and ``field``."""
        return {}

    def check_loaded(self):
        """After a weights file was copied in: raise a ConfigError if the loaded state
        breaks a rule the layer keeps (e.g. a mask that is not 0/1)."""

    # ----- optional: data layers ----------------------------------------------------
    def epoch_length(self):
        """Batches per pass over the data set (a data layer), else None."""
        return None

    def rewind(self):
        """Serve the data from the start again (a data layer that does not shuffle), so
        that repeated evaluations on part of a test set see the same samples."""

    # ----- optional protocol: pruning (wincaffe.pruning) -----------------------------
    # A layer that can be pruned names its domains and, per domain, gives scores
    # (magnitudes; first two axes (K, C)), reports its 0/1 mask and installs a new
    # one. How a mask is stored (Param.mask, a buffer, ...) is the layer's business.
    prune_by_default = False   # pruned when the user names no layers (convolutions)

    def prune_domains(self):
        """The domains this layer can be pruned in, the one it multiplies in first:
        a subset of ``("spatial", "winograd", "spectral")``; () for none."""
        return ()

    def prune_scores(self, domain):
        """Magnitudes of the weights in ``domain``, an array (K, C, ...) that
        :meth:`mask` and :meth:`set_mask` share the shape of."""
        raise self._no_domain(domain)

    def mask(self, domain):
        """The current 0/1 mask in ``domain`` (ones where nothing is pruned), a new array."""
        raise self._no_domain(domain)

    def set_mask(self, domain, mask):
        """Install a 0/1 mask in ``domain`` (None: prune nothing)."""
        raise self._no_domain(domain)

    def prune_partners(self, domain):
        """None, or an int array ``partner`` over the trailing axes of the scores
        (flattened): entries i and partner[i] must be pruned together (e.g. the
        conjugate pairs of a real FFT's half spectrum); partner[i] == i for singles."""
        return None

    def _no_domain(self, domain):
        have = ", ".join(self.prune_domains()) or "none"
        return self.error(f"cannot be pruned in the {domain!r} domain (its domains: {have})")

    def _check_domain(self, domain):
        if domain not in self.prune_domains():
            raise self._no_domain(domain)

    def _require_binary(self, mask, what):
        if not np.isin(mask, (0, 1)).all():
            raise self.error(f"{what} holds values other than 0 and 1")

    # helpers for the common case: param ``index`` itself is pruned (Param.mask)
    def _param_scores(self, index=0):
        return np.abs(self.params[index].data)

    def _param_mask(self, index=0):
        p = self.params[index]
        return np.ones_like(p.data) if p.mask is None else p.mask.copy()

    def _set_param_mask(self, mask, index=0):
        p = self.params[index]
        if mask is not None and np.shape(mask) != p.shape:
            raise self.error(f"mask shape {np.shape(mask)} does not fit param {index} {p.shape}")
        p.set_mask(mask)

    # ----- optional protocol: multiply accounting (wincaffe.counting) -----------------
    def count_mults(self):
        """After setup and reshape: this layer's multiplies per image as exact integers,
        ``{"direct": ..., "winograd": ..., "fft": ..., "fft_masked": ..., "transforms": ...,
        "weight_density": ..., "weight_domain": ...}`` (only the keys that apply), or None
        for a layer that does not multiply. See :mod:`wincaffe.counting`."""
        return None

    def count_sparse_mults(self, bottoms):
        """Right after a forward on ``bottoms``: ``{"direct_sparse": n, "winograd_sparse": n}``
        (the keys that apply), products with both factors nonzero summed over the batch."""
        return None

    # ----- optional protocol: quantization (wincaffe.quantization) --------------------
    # A layer type that can run quantized names the block of its spec that takes the
    # settings (``quantization_block``, e.g. ("winograd_param", "quantize")): the core
    # writes them there and builds the net again. The layer then reports its state and
    # observes calibration batches when asked.
    quantization_block = None

    def quantization(self):
        """``{"bits", "scales", "variant", "mode", "path", "calibrated"}`` of a layer that
        runs quantized, else None."""
        return None

    def calibrate(self, on):
        """Observe input ranges in every forward (any phase) while ``on``."""

    # ----- optional protocol: memory traffic (wincaffe.counting.memory_traffic) ---------
    def memory_traffic(self, bottoms, tops, propagate_down):
        """After reshape: the bytes ``(forward, backward)`` one pass reads and writes, every
        array counted once per read and once per write, for a backward with
        ``propagate_down``. This default is a layer without arrays of its own: forward reads
        the bottoms' data and the params and writes the tops' data; backward reads the tops'
        diffs, the bottoms' data and the params and writes the param diffs and the diffs of
        the bottoms it propagates to. Layers that stream their own arrays (an im2col
        buffer, transform-domain tiles, an argmax) or skip some of these count their own."""
        data = sum(b.data.nbytes for b in bottoms)
        params = sum(p.data.nbytes for p in self.params)
        outs = sum(t.data.nbytes for t in tops)
        grads = sum(b.data.nbytes for b, down in zip(bottoms, propagate_down) if down)
        return data + params + outs, outs + data + 2 * params + grads

    # ----- optional protocol: how the layer computes (wincaffe time) -------------------
    def execution(self):
        """A short note on the path the last forward took (e.g. ``sparse 10.0%``,
        ``int8 avx512_vnni``), or None."""
        return None

    # ----- optional protocol: transform-domain activations ---------------------------
    def activation_density(self, bottoms):
        """Right after this layer's forward on ``bottoms``: ``(domain, fraction of
        nonzero inputs)`` at the point where it multiplies (Liu et al., Fig. 3), or None."""
        return None


class SpatialPruning:
    """Mixin for a layer pruned in the ``spatial`` domain only, through param 0's
    ``Param.mask`` (scores |W|): ``class Convolution(SpatialPruning, Layer)``."""

    def prune_domains(self):
        return ("spatial",)

    def prune_scores(self, domain):
        self._check_domain(domain)
        return self._param_scores()

    def mask(self, domain):
        self._check_domain(domain)
        return self._param_mask()

    def set_mask(self, domain, mask):
        self._check_domain(domain)
        self._set_param_mask(mask)


# ----- registry -------------------------------------------------------------------
_REGISTRY = {}
_BROKEN = {}  # plugin module -> the exception its import raised
_PLUGINS_LOADED = False


def register(type_name):
    """Class decorator: make ``type_name`` (as written in net files) build this class."""

    def deco(cls):
        if not issubclass(cls, Layer):
            raise TypeError(f"@register({type_name!r}): {cls.__name__} is not a Layer")
        existing = _REGISTRY.get(type_name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise TypeError(f"layer type {type_name!r} registered twice "
                            f"({existing.__module__}.{existing.__qualname__} and {cls.__module__}.{cls.__qualname__})")
        cls.type_name = type_name
        _REGISTRY[type_name] = cls
        return cls

    return deco


def load_plugins():
    """Import every module of each package in the ``wincaffe.layers`` entry-point
    group (the bundled ``layers`` package always), so their ``@register`` runs."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    packages = {"layers"}
    try:
        for ep in metadata.entry_points(group="wincaffe.layers"):
            packages.add(ep.value)
    except Exception:  # a broken environment must not hide the bundled layers
        pass
    for pkg_name in sorted(packages):
        try:
            pkg = importlib.import_module(pkg_name)
        except Exception as exc:
            _BROKEN[pkg_name] = exc
            continue
        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name.startswith("_"):
                continue
            name = f"{pkg_name}.{mod.name}"
            try:
                importlib.import_module(name)
            except Exception as exc:  # one broken plugin must not take the others down
                _BROKEN[name] = exc
                warnings.warn(f"wincaffe: layer plugin {name} failed to import: {type(exc).__name__}: {exc}",
                              RuntimeWarning, stacklevel=2)
    _PLUGINS_LOADED = True


def layer_class(type_name):
    """The class registered for ``type_name``; raises ConfigError if unknown."""
    load_plugins()
    try:
        return _REGISTRY[type_name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        broken = "".join(f"; plugin {m} failed to import ({type(e).__name__}: {e})" for m, e in _BROKEN.items())
        raise ConfigError(f"unknown layer type {type_name!r} (known types: {known}){broken}", field="type") from None


def layer_types():
    load_plugins()
    return dict(_REGISTRY)
