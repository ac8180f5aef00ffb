"""Net and solver definitions: YAML in, validated plain mappings out.

This is the one place that turns a file into objects and the one place that
words errors about files. Field names follow Caffe's prototxt (``layer``,
``bottom``, ``top``, ``include: {phase: TRAIN}``, ``param: [{lr_mult, decay_mult}]``,
``convolution_param``, ...; solver: ``base_lr``, ``lr_policy``, ...).
"""
import os

import yaml

from wincaffe.errors import ConfigError
from wincaffe.layer import TEST, TRAIN, layer_class
from wincaffe.schema import Block, Field, Params

# ----- reading files -------------------------------------------------------------


def read_yaml(path):
    """Parse a YAML file into a mapping, with errors that name the file and line."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError("file not found", source=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}): is this a YAML file?", source=path) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML: {where}{problem}", source=path) from None
    if not isinstance(doc, dict):
        raise ConfigError("must be a YAML mapping at the top level", source=path)
    return doc


# ----- nets --------------------------------------------------------------------------

_PARAM_SPEC = Block(
    name=Field(str, None),
    lr_mult=Field(float, 1.0, min=0.0),
    decay_mult=Field(float, 1.0, min=0.0),
)
_RULE_SPEC = Block(phase=Field(str, None, choices=(TRAIN, TEST)))
_COMMON_FIELDS = {"name", "type", "bottom", "top", "include", "exclude", "param",
                  "loss_weight", "propagate_down"}


def _names(value, field, ctx):
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    for i, v in enumerate(items):
        if not isinstance(v, str) or not v:
            raise ConfigError(f"must be a blob name (string) or a list of them, got {v!r}",
                              field=f"{field}[{i}]" if isinstance(value, list) else field, **ctx)
    return list(items)


def validate_layer(raw, index, source=None):
    """Validate one layer mapping; returns a Params with every field filled."""
    if not isinstance(raw, dict):
        raise ConfigError(f"layer #{index} must be a mapping, got {raw!r}", source=source)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"layer #{index} needs a 'name' (a non-empty string)", source=source, field="name")
    type_name = raw.get("type")
    ctx = dict(source=source, layer=name)
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError("needs a 'type' (a string such as Convolution)", field="type", **ctx)
    try:
        cls = layer_class(type_name)
    except ConfigError as exc:
        raise exc.located(**ctx) from None
    ctx["layer_type"] = type_name
    for key in raw:
        if key not in _COMMON_FIELDS and key not in cls.param_blocks:
            allowed = sorted(_COMMON_FIELDS | set(cls.param_blocks))
            raise ConfigError(f"unknown field for a {type_name} layer (allowed: {', '.join(allowed)})",
                              field=key, **ctx)
    spec = Params(name=name, type=type_name)
    spec["bottom"] = _names(raw.get("bottom"), "bottom", ctx)
    spec["top"] = _names(raw.get("top"), "top", ctx)
    try:
        spec["include"] = [_RULE_SPEC.validate(r, f"include[{i}]")
                           for i, r in enumerate(_as_list(raw.get("include")))]
        spec["exclude"] = [_RULE_SPEC.validate(r, f"exclude[{i}]")
                           for i, r in enumerate(_as_list(raw.get("exclude")))]
        spec["param"] = [_PARAM_SPEC.validate(p, f"param[{i}]")
                         for i, p in enumerate(_as_list(raw.get("param")))]
        spec["loss_weight"] = Field(float, None, list_of=True).validate(raw["loss_weight"], "loss_weight") \
            if raw.get("loss_weight") is not None else None
        spec["propagate_down"] = Field(bool, None, list_of=True).validate(raw["propagate_down"], "propagate_down") \
            if raw.get("propagate_down") is not None else None
        for key, block in cls.param_blocks.items():
            spec[key] = block.validate(raw.get(key), key)
    except ConfigError as exc:
        raise exc.located(**ctx) from None
    if spec["include"] and spec["exclude"]:
        raise ConfigError("give either 'include' or 'exclude', not both (as Caffe)", field="exclude", **ctx)
    for i, p in enumerate(spec["param"]):
        if p.name is not None:
            raise ConfigError("sharing parameters by name is not supported yet", field=f"param[{i}].name", **ctx)
    shared = [t for t in spec["top"] if t in spec["bottom"]]
    if shared and not cls.in_place:
        raise ConfigError(f"cannot run in place: top '{shared[0]}' is also a bottom (give the top another name)",
                          field="top", **ctx)
    _check_count(cls.num_bottoms, len(spec["bottom"]), "bottom", ctx)
    _check_count(cls.num_tops, len(spec["top"]), "top", ctx)
    return spec


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _check_count(rule, n, field, ctx):
    lo, hi = (rule, rule) if isinstance(rule, int) else rule
    if n < lo or (hi is not None and n > hi):
        want = f"exactly {lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
        raise ConfigError(f"takes {want} {field} blob(s), got {n}", field=field, **ctx)


def load_net_spec(source):
    """Read a net file (path) or mapping; returns ``Params(name, layer=[...], source)``."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        raw = read_yaml(path)
    else:
        path, raw = None, source
    return validate_net(raw, path)


def validate_net(raw, path=None):
    if not isinstance(raw, dict):
        raise ConfigError("a net definition must be a mapping", source=path)
    unknown = set(raw) - {"name", "layer", "layers", "force_backward"}
    if unknown:
        raise ConfigError("unknown field (allowed: name, layer, layers, force_backward)",
                          source=path, field=sorted(unknown)[0])
    if "layer" in raw and "layers" in raw:
        raise ConfigError("give either 'layer' or 'layers', not both", source=path, field="layer")
    if raw.get("force_backward"):
        raise ConfigError("force_backward is not supported yet", source=path, field="force_backward")
    layers = raw.get("layer", raw.get("layers"))
    if not isinstance(layers, list) or not layers:
        raise ConfigError("needs a non-empty list 'layer' of layer mappings", source=path, field="layer")
    specs = [validate_layer(l, i, path) for i, l in enumerate(layers)]
    for phase in (TRAIN, TEST):  # Caffe allows one name per phase (e.g. two Data layers)
        seen = {}
        for i, s in enumerate(specs):
            if not layer_in_phase(s, phase):
                continue
            if s.name in seen:
                raise ConfigError(f"duplicate layer name in phase {phase} (also layer #{seen[s.name]})",
                                  source=path, layer=s.name, layer_type=s.type, field="name")
            seen[s.name] = i
    name = raw.get("name", os.path.splitext(os.path.basename(path))[0] if path else "net")
    return Params(name=str(name), layer=specs, source=path,
                  force_backward=bool(raw.get("force_backward", False)))


def layer_in_phase(spec, phase):
    """Caffe's NetStateRule: include/exclude by phase."""
    if spec.include:
        return any(r.phase in (None, phase) for r in spec.include)
    if spec.exclude:
        return not any(r.phase in (None, phase) for r in spec.exclude)
    return True


# ----- solvers -----------------------------------------------------------------------

LR_POLICIES = ("fixed", "step", "multistep", "inv", "exp", "poly", "sigmoid")
SOLVER_TYPES = ("SGD", "Nesterov", "Adam")

SOLVER_SPEC = Block(
    net=Field(str),
    train_net=Field(str, None),
    test_net=Field(str, None),
    type=Field(str, "SGD", choices=SOLVER_TYPES),
    base_lr=Field(float, min_exclusive=0.0),
    momentum=Field(float, 0.0, min=0.0, max=1.0),
    momentum2=Field(float, 0.999, min=0.0, max=1.0),
    delta=Field(float, 1e-8, min_exclusive=0.0),
    weight_decay=Field(float, 0.0, min=0.0),
    regularization_type=Field(str, "L2", choices=("L2", "L1")),
    clip_gradients=Field(float, -1.0),
    lr_policy=Field(str, "fixed", choices=LR_POLICIES),
    gamma=Field(float, None),
    power=Field(float, None),
    stepsize=Field(int, None, min=1),
    stepvalue=Field(int, None, list_of=True, min=1),
    max_iter=Field(int, min=0),
    iter_size=Field(int, 1, min=1),
    average_loss=Field(int, 1, min=1),
    test_iter=Field(int, 0, min=0),
    test_interval=Field(int, 0, min=0),
    test_initialization=Field(bool, True),
    display=Field(int, 0, min=0),
    snapshot=Field(int, 0, min=0),
    snapshot_prefix=Field(str, None),
    random_seed=Field(int, 0),
    solver_mode=Field(str, "CPU", choices=("CPU",)),
)
# Fields some policies need (checked after the generic pass).
_POLICY_NEEDS = {"step": ("gamma", "stepsize"), "multistep": ("gamma", "stepvalue"),
                 "inv": ("gamma", "power"), "exp": ("gamma",), "poly": ("power",),
                 "sigmoid": ("gamma", "stepsize")}


def load_solver_spec(path):
    """Read and validate a solver file; relative ``net`` paths resolve against the
    solver file's folder when they don't exist relative to the working directory."""
    return validate_solver(read_yaml(path), path)


def validate_solver(raw, path=None):
    """Validate a solver mapping (as read from ``path``, which names it in errors and
    anchors relative net paths)."""
    if not isinstance(raw, dict):
        raise ConfigError("a solver definition must be a mapping", source=path)
    if "net" not in raw and "train_net" in raw:
        raw = dict(raw, net=raw["train_net"])
    try:
        spec = SOLVER_SPEC.validate(raw, "")
    except ConfigError as exc:
        raise exc.located(source=path) from None
    for field in _POLICY_NEEDS.get(spec.lr_policy, ()):
        if spec[field] is None:
            raise ConfigError(f"lr_policy {spec.lr_policy} needs '{field}'", source=path, field=field)
    if spec.stepvalue is not None and sorted(spec.stepvalue) != spec.stepvalue:
        raise ConfigError("must be increasing", source=path, field="stepvalue")
    if spec.test_interval and not spec.test_iter:
        raise ConfigError("test_interval is set but test_iter is 0", source=path, field="test_iter")
    if spec.snapshot_prefix is None:
        spec["snapshot_prefix"] = (os.path.splitext(os.path.basename(path))[0].replace("_solver", "")
                                   if path else "solver")
    if path:
        spec["net"] = resolve_relative(spec.net, path)
        if spec.test_net:
            spec["test_net"] = resolve_relative(spec.test_net, path)
    spec["source"] = path
    return spec


def resolve_relative(target, relative_to):
    """``target`` as given if it exists, else relative to ``relative_to``'s folder."""
    if os.path.isabs(target) or os.path.exists(target):
        return target
    candidate = os.path.join(os.path.dirname(os.path.abspath(relative_to)), target)
    if os.path.exists(candidate):
        return candidate
    candidate2 = os.path.join(os.path.dirname(os.path.abspath(relative_to)), os.path.basename(target))
    return candidate2 if os.path.exists(candidate2) else target
