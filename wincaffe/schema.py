"""Declarative checks for the parameter blocks of net and solver files.

A layer declares its blocks as ``{"convolution_param": Block(num_output=Field(int, ...), ...)}``;
:func:`Block.validate` turns the YAML mapping into a :class:`Params` (a dict with
attribute access) with defaults filled in, or raises one :class:`ConfigError`
naming the dotted field path (``convolution_param.weight_filler.std``).
"""
from wincaffe.errors import ConfigError

REQUIRED = object()

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list", dict: "a mapping"}


class Params(dict):
    """A validated parameter block: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _describe(kind):
    if isinstance(kind, tuple):
        return " or ".join(_describe(k) for k in kind)
    return _TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind)))


class Field:
    """One scalar or list field.

    kind    -- int, float, str, bool, or a tuple of them; float accepts ints.
    default -- value when absent (``REQUIRED`` makes absence an error).
    choices -- allowed values (strings are compared case-insensitively for enums
               and normalised to the spelling given here, e.g. ``MAX``).
    min, max -- numeric bounds, inclusive; ``min_exclusive`` for strict lower bound.
    list_of -- the field is a list of ``kind`` (a bare scalar is accepted as a
               one-element list); ``length`` pins its length.
    """

    def __init__(self, kind, default=REQUIRED, *, choices=None, min=None, max=None,
                 min_exclusive=None, list_of=False, length=None, doc=""):
        self.kind, self.default, self.choices = kind, default, choices
        self.min, self.max, self.min_exclusive = min, max, min_exclusive
        self.list_of, self.length, self.doc = list_of, length, doc

    def _scalar(self, value, path):
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        ok = False
        for k in kinds:
            if k is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                value, ok = float(value), True
                break
            if k is float and isinstance(value, str):
                # YAML 1.1 reads "1e-4" (no dot) as a string; Caffe users write it often
                try:
                    value, ok = float(value), True
                    break
                except ValueError:
                    pass
            if k is int and isinstance(value, int) and not isinstance(value, bool):
                ok = True
                break
            if k is int and isinstance(value, float) and value.is_integer():
                value, ok = int(value), True
                break
            if k is bool and isinstance(value, bool):
                ok = True
                break
            if k is str and isinstance(value, str):
                ok = True
                break
        if not ok:
            raise ConfigError(f"must be {_describe(self.kind)}, got {value!r}", field=path)
        if isinstance(value, float) and value != value:
            raise ConfigError("must be a number, got nan", field=path)
        if self.choices is not None:
            match = [c for c in self.choices if (isinstance(c, str) and isinstance(value, str)
                                                 and c.lower() == value.lower()) or c == value]
            if not match:
                allowed = ", ".join(str(c) for c in self.choices)
                raise ConfigError(f"must be one of {allowed}, got {value!r}", field=path)
            value = match[0]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                raise ConfigError(f"must be >= {self.min}, got {value!r}", field=path)
            if self.min_exclusive is not None and value <= self.min_exclusive:
                raise ConfigError(f"must be > {self.min_exclusive}, got {value!r}", field=path)
            if self.max is not None and value > self.max:
                raise ConfigError(f"must be <= {self.max}, got {value!r}", field=path)
        return value

    def validate(self, value, path):
        if not self.list_of:
            return self._scalar(value, path)
        items = value if isinstance(value, list) else [value]
        if self.length is not None and len(items) != self.length:
            raise ConfigError(f"must have {self.length} entries, got {len(items)}", field=path)
        return [self._scalar(v, f"{path}[{i}]") for i, v in enumerate(items)]


class Block:
    """A mapping of named fields (which may themselves be Blocks)."""

    def __init__(self, doc="", **fields):
        self.fields, self.doc = fields, doc
        self.default = None  # a Block is optional; absent means all defaults

    def validate(self, value, path):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"must be a mapping, got {value!r}", field=path)
        out = Params()
        for key in value:
            if key not in self.fields:
                known = ", ".join(sorted(self.fields)) or "none"
                raise ConfigError(f"unknown field (known fields: {known})",
                                  field=f"{path}.{key}" if path else str(key))
        for key, spec in self.fields.items():
            sub = f"{path}.{key}" if path else key
            if key in value and value[key] is not None:
                out[key] = spec.validate(value[key], sub)
            elif isinstance(spec, Block):
                out[key] = spec.validate({}, sub)
            elif spec.default is REQUIRED:
                raise ConfigError("is required", field=sub)
            else:
                out[key] = spec.default
        return out


def filler_block(default_type="constant", default_value=0.0):
    """The block Caffe calls a FillerParameter (weight_filler, bias_filler)."""
    return Block(
        type=Field(str, default_type, choices=("constant", "gaussian", "xavier", "msra", "uniform")),
        value=Field(float, default_value),
        std=Field(float, 1.0, min=0.0),
        mean=Field(float, 0.0),
        min=Field(float, 0.0),
        max=Field(float, 1.0),
        variance_norm=Field(str, "FAN_IN", choices=("FAN_IN", "FAN_OUT", "AVERAGE")),
    )


def convolution_block():
    """Caffe's ConvolutionParameter, shared by Convolution, WinogradConv and FFTConv."""
    return Block(
        num_output=Field(int, min=1),
        kernel_size=Field(int, min=1),
        pad=Field(int, 0, min=0),
        stride=Field(int, 1, min=1),
        dilation=Field(int, 1, min=1),
        group=Field(int, 1, min=1),
        bias_term=Field(bool, True),
        weight_filler=filler_block("xavier"),
        bias_filler=filler_block("constant"),
    )
