"""``wincaffe quantize``: a trained float net in; the test accuracy of the float net, of
quantized Winograd (QW) and of channel-balanced quantized Winograd (BQW, Chikin &
Kryzhanovskiy) out, and a quantized net written as a YAML file and a weights file.

    float test → for QW and BQW: spec with the settings → calibrate on TRAIN batches → test

The core never names a layer type: a layer class that can run quantized declares
``quantization_block`` (where its spec takes the settings, see :class:`wincaffe.layer.Layer`);
:func:`quantized_net_mapping` writes the settings there, and the layers calibrate
themselves when asked (``Layer.calibrate``). Calibration runs the TRAIN phase's data
(its augmentation included) through the net, forward only.
"""
import copy
import os

from wincaffe.config import load_net_spec, read_yaml
from wincaffe.errors import ConfigError
from wincaffe.fileio import ensure_writable_dir
from wincaffe.layer import TEST, TRAIN, layer_class
from wincaffe.log import get_logger
from wincaffe.prune_job import accuracy_of

log = get_logger("quantize")

VARIANTS = ("qw", "bqw")


def quantized_net_mapping(raw, settings, layers=None):
    """A copy of the net mapping ``raw`` (as read from YAML) with ``settings`` (bits,
    scales, balance, mode, ...) written into every layer that can run quantized (or the
    ``layers`` named). Raises ConfigError if a named layer cannot, or no layer can."""
    out = copy.deepcopy(raw)
    wanted = set(layers) if layers else None
    done = []
    for spec in out.get("layer", out.get("layers")) or []:
        if not isinstance(spec, dict) or "type" not in spec:
            continue
        try:
            cls = layer_class(spec["type"])
        except Exception:
            continue            # validation of the new mapping reports it
        block = getattr(cls, "quantization_block", None)
        if wanted is not None and spec.get("name") in wanted and block is None:
            raise ConfigError(f"layer '{spec.get('name')}' ({spec['type']}) cannot run quantized",
                              field="--layers")
        if block is None or (wanted is not None and spec.get("name") not in wanted):
            continue
        node = spec
        for key in block[:-1]:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError("must be a mapping", layer=spec.get("name"), field=key)
        node[block[-1]] = dict(settings)
        done.append(spec.get("name"))
    if wanted is not None:
        missing = sorted(wanted - set(done))
        if missing:
            raise ConfigError(f"no layer named {', '.join(missing)} that can run quantized", field="--layers")
    if not done:
        raise ConfigError("the net has no layer that can run quantized (WinogradConv)", field="--model")
    return out, done


def quantized_layers(net):
    """[(layer name, layer.quantization())] of the layers of ``net`` that run quantized."""
    return [(l.name, l.quantization()) for l in net.layers if l.quantization() is not None]


def calibrate(net, batches, progress=None):
    """Run ``batches`` forward passes of ``net`` with every quantized layer observing its
    input ranges (the ranges start over)."""
    for layer in net.layers:
        stage = getattr(layer, "quant", None)
        if layer.quantization() is not None and stage is not None:
            stage.reset_ranges()
        layer.calibrate(True)
    try:
        for _ in range(batches):
            net.forward()
            if progress is not None:
                progress.update(1)
    finally:
        for layer in net.layers:
            layer.calibrate(False)


def _settings(bits, scales, mode, variant):
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ConfigError(f"must be in 2..16, got {bits}", field="--bits")
    return {"bits": bits, "scales": scales, "mode": mode, "balance": variant == "bqw"}


def _nets(mapping, source, weights, dtype):
    from wincaffe.net import Net
    from wincaffe.snapshot import load_weights
    spec = load_net_spec(mapping)
    spec["source"] = source
    train = Net(spec, TRAIN, dtype=dtype)
    test = Net(spec, TEST, dtype=dtype, share_from=train)
    load_weights(test, weights, strict=True)
    return train, test


def run(model, weights, *, bits=8, scales="tile", mode="static", balance=False, calib_batches=10,
        test_iterations=None, layers=None, output=None, dtype="float32", progress=False):
    """The job of ``wincaffe quantize``; returns the report: ``{"float", "qw", "bqw"}``
    accuracies, ``settings``, per-layer ``layers`` and the ``written`` files (if ``output``)."""
    from wincaffe.net import Net
    from wincaffe.snapshot import load_weights, save_weights
    if calib_batches < 1:
        raise ConfigError(f"must be >= 1, got {calib_batches}", field="--calib-batches")
    if output:      # before any long work: an unwritable output fails now
        if not os.path.splitext(os.path.basename(os.fspath(output)))[0]:
            raise ConfigError(f"needs a file name (FILE.npz), got {output!r}", field="--output")
        ensure_writable_dir(os.path.dirname(os.fspath(output)) or ".")
    raw = read_yaml(model)
    for variant in VARIANTS:      # bad settings or layers: one error now, not after the float test
        mapping, _ = quantized_net_mapping(raw, _settings(bits, scales, mode, variant), layers)
        load_net_spec(mapping)
    float_mapping, _ = quantized_net_mapping(raw, {"bits": 0})   # the float twin of a quantized model
    float_spec = load_net_spec(float_mapping)
    float_spec["source"] = os.fspath(model)
    float_net = Net(float_spec, TEST, dtype=dtype)
    load_weights(float_net, weights, strict=True)
    iters = test_iterations or float_net.epoch_length()
    if not iters:
        raise ConfigError("the TEST net has no data layer with a known length: give --test-iterations")
    report = {"model": os.fspath(model), "weights": os.fspath(weights), "test_iterations": iters,
              "calib_batches": calib_batches,
              "settings": {"bits": bits, "scales": scales, "mode": mode}}
    report["float"] = accuracy_of(float_net.evaluate(iters, rewind=True))
    log.info(f"float net: accuracy = {report['float']:.4f}")
    del float_net
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=2 * (calib_batches + iters), desc="quantize", unit="batch", leave=False)
    keep = None
    for variant in VARIANTS:
        mapping, names = quantized_net_mapping(raw, _settings(bits, scales, mode, variant), layers)
        train, test = _nets(mapping, os.fspath(model), weights, dtype)
        calibrate(train, calib_batches, bar)
        acc = accuracy_of(test.evaluate(iters, rewind=True, on_batch=(lambda i, b: bar.update(1)) if bar else None))
        report[variant] = acc
        log.info(f"{variant.upper()} {bits}-bit ({scales} scales, {mode}): accuracy = {acc:.4f}")
        if (variant == "bqw") == bool(balance):
            keep = (mapping, test)
            report["layers"] = [dict(name=n, **q) for n, q in quantized_layers(test)]
    if bar is not None:
        bar.close()
    if output:
        mapping, test = keep
        stem = os.path.splitext(os.fspath(output))[0]
        yaml_path, npz_path = stem + ".yaml", stem + ".npz"
        _write_net_yaml(yaml_path, mapping, model, weights, report)
        save_weights(test, npz_path)
        report["written"] = {"model": yaml_path, "weights": npz_path}
        log.info(f"wrote {yaml_path} and {npz_path}")
    return report


def _write_net_yaml(path, mapping, model, weights, report):
    import yaml
    from wincaffe.fileio import save_text
    s = report["settings"]
    head = (f"# {os.path.basename(path)}: {model} quantized by `wincaffe quantize` ({s['bits']} bits, "
            f"{s['scales']} scales, {s['mode']}),\n# calibrated from {weights} on {report['calib_batches']} "
            f"TRAIN batches; its weights file is {os.path.splitext(os.path.basename(path))[0]}.npz\n")
    text = head + yaml.safe_dump(mapping, sort_keys=False, default_flow_style=None, width=100)
    save_text(path, text)
