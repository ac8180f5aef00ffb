"""The outputs of ``wincaffe compare``: results.csv, results.md (the sources' tables with
their published figures beside ours) and PNG plots, all from the cell records."""
import os

import numpy as np

from wincaffe.counting import COUNTS
from wincaffe.report import write_csv, write_json
from wincaffe.fileio import save_text

# Published figures, for the tables' "theirs" columns.
LIU_TURAKHIA_TABLE2 = {0.25: (0.00, 0.00), 0.50: (0.21, 0.00), 0.75: (1.19, 0.18), 1.00: (89.93, 89.93)}
LIU_TURAKHIA_FIG8 = ("Liu & Turakhia (Fig. 8, LeNet-5 with 3x3 kernels, F(2,3), baseline 98.2%): retrained "
                     "accuracy stays at the baseline up to a 90% pruning rate.")
LIU_ET_AL_DENSITY = {"(a)": "60%", "(b)": "—", "(c)": "40%"}   # VGG-nagadomi, ≤ 0.1% loss (Liu et al. §4)
LOSS_BOUND = 0.001

# The count a method's element-wise stage runs, by the domain it prunes in.
ALGORITHM_COUNT = {"winograd": "winograd_sparse", "spectral": "fft_masked", "spatial": "direct_sparse"}


def _ok(records):
    return [r for r in records if "error" not in r]


def _by_method(records):
    out = {}
    for r in _ok(records):
        out.setdefault(r["method"], []).append(r)
    return out


def _stats(values):
    """(mean, std) of a list (std 0 for one value)."""
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std()) if a.size > 1 else 0.0


def _per_rate(recs, key):
    """{rate: (mean, std, n)} of ``key`` over the repeats."""
    out = {}
    for rate in sorted({r["rate"] for r in recs}):
        vals = [r[key] for r in recs if r["rate"] == rate and r.get(key) is not None]
        if vals:
            m, s = _stats(vals)
            out[rate] = (m, s, len(vals))
    return out


def _pct(mean, std=0.0, n=1, digits=2):
    text = f"{100 * mean:.{digits}f}%"
    return text + (f" ± {100 * std:.{digits}f}" if n > 1 else "")


def algorithm_count(rec):
    domains = [l["domain"] for l in rec.get("layers", {}).values()]
    domain = max(set(domains), key=domains.count) if domains else "spatial"
    return ALGORITHM_COUNT.get(domain, "direct_sparse")


def csv_rows(records):
    rows, keys = [], ["method", "rate", "repeat", "density"]
    layer_names = []
    for r in records:
        for name in r.get("layers", {}):
            if name not in layer_names:
                layer_names.append(name)
    keys += [f"density_{n}" for n in layer_names]
    keys += ["accuracy_dense", "accuracy_pruned", "accuracy_retrained", "retrain_iters"]
    keys += [f"mults_{k}" for k in COUNTS] + ["inference_ms", "batch", "seconds", "error"]
    for r in sorted(records, key=lambda r: (r["method"], r["rate"], r["repeat"])):
        row = {k: r.get(k) for k in ("method", "rate", "repeat", "density", "accuracy_dense", "accuracy_pruned",
                                     "accuracy_retrained", "retrain_iters", "inference_ms", "batch", "seconds",
                                     "error")}
        for name, l in r.get("layers", {}).items():
            row[f"density_{name}"] = l["density"]
        for k in COUNTS:
            row[f"mults_{k}"] = (r.get("mults") or {}).get(k)
        rows.append(row)
    return rows, keys


# ----- results.md ----------------------------------------------------------------------------------

def _md_table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _dense_line(name, title, recs, dense_info):
    acc = _stats([r["accuracy_dense"] for r in recs])[0]
    info = dense_info.get(name) or {}
    trained = f", trained {info['iters']} iterations in {info['seconds']:.0f} s" if info else ""
    return f"**{title}** (`{name}`): dense accuracy {100 * acc:.2f}%{trained}."


def markdown(study, records, dense_info, wall_seconds, skipped=0):
    methods = {m.name: m for m in study["methods"]}
    by = _by_method(records)
    out = [f"# {study['name']}", ""]
    failed = [r for r in records if "error" in r]
    test_images = next((r["test_images"] for r in _ok(records)), None)
    reused = f", {skipped} of them kept from an earlier run" if skipped else ""
    scored = f"accuracies on {test_images} MNIST test images; " if test_images else ""
    out.append(f"{len(records)} cells ({len(failed)} failed{reused}); this run's wall time {wall_seconds / 60:.1f} "
               f"min; {scored}loss = dense accuracy − accuracy, in points.")
    out.append("")
    for table, heading in (("liu_turakhia_fft", "FFT pruning: Liu & Turakhia, Table 2"),
                           ("liu_turakhia_winograd", "Winograd pruning: the data of Liu & Turakhia, Fig. 8"),
                           ("liu_et_al", "Liu et al.: the three architectures of Fig. 1, density at ≤ 0.1% loss"),
                           ("baseline", "Other methods")):
        names = [n for n, m in methods.items() if m.table == table and n in by]
        if not names:
            continue
        out += [f"## {heading}", ""]
        if table == "liu_et_al":
            rows = []
            for n in names:
                recs = by[n]
                dense = _stats([r["accuracy_dense"] for r in recs])[0]
                acc = _per_rate(recs, "accuracy_retrained")
                dens = _per_rate(recs, "density")
                good = [rate for rate, (a, _, _) in acc.items() if dense - a <= LOSS_BOUND]
                best = min(good, key=lambda rate: dens[rate][0]) if good else None
                label = methods[n].label or n
                rows.append([label, methods[n].title, _pct(dense),
                             _pct(dens[best][0], digits=1) if best is not None else "not reached",
                             f"{best:g}" if best is not None else "—", LIU_ET_AL_DENSITY.get(label, "—")])
            out.append(_md_table(["arch.", "method", "dense accuracy", "lowest density with ≤ 0.1% loss",
                                  "at rate", "Liu et al. (VGG-nagadomi, CIFAR-10)"], rows))
            out.append("")
        for n in names:
            recs = by[n]
            out += [_dense_line(n, methods[n].title, recs, dense_info), ""]
            dense = _stats([r["accuracy_dense"] for r in recs])[0]
            pr, rt = _per_rate(recs, "accuracy_pruned"), _per_rate(recs, "accuracy_retrained")
            dens, iters = _per_rate(recs, "density"), _per_rate(recs, "retrain_iters")
            rows = []
            for rate in sorted(rt):
                row = [f"{100 * rate:g}%", _pct(dens[rate][0], digits=1), _pct(*pr[rate]), _pct(*rt[rate]),
                       f"{100 * (dense - pr[rate][0]):.2f}", f"{100 * (dense - rt[rate][0]):.2f}",
                       f"{iters[rate][0]:.0f}"]
                if table == "liu_turakhia_fft":
                    theirs = LIU_TURAKHIA_TABLE2.get(round(rate, 2))
                    row += [f"{theirs[0]:.2f}" if theirs else "—", f"{theirs[1]:.2f}" if theirs else "—"]
                rows.append(row)
            head = ["rate", "density", "accuracy pruned", "accuracy retrained", "loss w/o retraining",
                    "loss after retraining", "retraining iterations"]
            if table == "liu_turakhia_fft":
                head += ["theirs: loss w/o retraining", "theirs: loss after 1 epoch"]
            out += [_md_table(head, rows), ""]
        if table == "liu_turakhia_winograd":
            out += [LIU_TURAKHIA_FIG8, ""]
    threads = study.get("threads", 1)
    out += ["## Multiplies and inference time", "",
            "Multiplies per image of the pruned layers' own algorithm (winograd_sparse, fft_masked or "
            "direct_sparse, see `wincaffe mults`), the whole net; inference: median ms per TEST batch "
            f"on {threads} thread{'s' if threads > 1 else ''} per worker (dense products: pruned entries "
            "are multiplied as zeros).", ""]
    rows = []
    for n, recs in by.items():
        key = algorithm_count(recs[0])
        for rate in sorted({r["rate"] for r in recs}):
            rs = [r for r in recs if r["rate"] == rate]
            direct = rs[0]["mults"]["direct"]
            counts = [r["mults"][key] for r in rs if r["mults"].get(key) is not None]
            count = _stats(counts)[0] if counts else None
            ms = [r["inference_ms"] for r in rs if r.get("inference_ms") is not None]
            rows.append([n, f"{100 * rate:g}%", key, f"{count:,.0f}" if count is not None else "not measured",
                         f"{direct / count:.2f}x" if count else "—", f"{np.median(ms):.2f}" if ms else "—"])
    out += [_md_table(["method", "rate", "count", "multiplies", "direct / count", "inference ms"], rows), ""]
    if failed:
        out += ["## Failed cells", ""]
        out += [f"- {r['method']} rate {r['rate']:g} repeat {r['repeat']}: {r['error']}" for r in failed]
        out.append("")
    out += ["Plots: accuracy_vs_rate.png, accuracy_vs_density.png, accuracy_vs_mults.png, weight_histograms.png.", ""]
    return "\n".join(out)


# ----- plots -------------------------------------------------------------------------------------------

def plots(study, output, records):
    from wincaffe import plots as P
    by = _by_method(records)
    if not by:
        return []
    titles = {m.name: m.title for m in study["methods"]}
    series = {}
    for n, recs in by.items():
        key = algorithm_count(recs[0])
        series[n] = {
            "title": titles.get(n, n),
            "rate": sorted(_per_rate(recs, "accuracy_retrained")),
            "pruned": [v[0] for v in _per_rate(recs, "accuracy_pruned").values()],
            "retrained": [v[0] for v in _per_rate(recs, "accuracy_retrained").values()],
            "density": [v[0] for v in _per_rate(recs, "density").values()],
            "dense": _stats([r["accuracy_dense"] for r in recs])[0],
            "mults": [_stats([r["mults"][key] or 0 for r in recs if r["rate"] == rate])[0]
                      for rate in sorted(_per_rate(recs, "accuracy_retrained"))],
            "count": key,
        }
    written = [P.accuracy_vs_rate(os.path.join(output, "accuracy_vs_rate.png"), series),
               P.accuracy_vs(os.path.join(output, "accuracy_vs_density.png"), series, "density",
                             "density of the pruned layers (nonzero / entries)", log=False),
               P.accuracy_vs(os.path.join(output, "accuracy_vs_mults.png"), series, "mults",
                             "multiplies per image (the pruned layers' own algorithm, whole net)", log=True)]
    hists = []
    for m in study["methods"]:
        if m.table not in ("liu_turakhia_fft", "liu_turakhia_winograd") or m.name not in by:
            continue
        target = 0.75 if m.table == "liu_turakhia_fft" else 0.5
        rec = min(by[m.name], key=lambda r: (abs(r["rate"] - target), r["repeat"]))
        for layer, h in rec.get("hist", {}).items():
            hists.append((f"{m.title}: {layer} ({h['domain']}), rate {100 * rec['rate']:g}%", h))
    if hists:
        written.append(P.weight_histograms(os.path.join(output, "weight_histograms.png"), hists))
    return [w for w in written if w]


def write_outputs(study, output, records, dense_info, wall_seconds, skipped=0):
    rows, keys = csv_rows(records)
    write_csv(os.path.join(output, "results.csv"), rows, keys)
    save_text(os.path.join(output, "results.md"), markdown(study, records, dense_info, wall_seconds, skipped))
    pngs = plots(study, output, records)
    summary = {"study": study["name"], "wall_seconds": round(wall_seconds, 1),
               "files": ["results.jsonl", "results.csv", "results.md"] + [os.path.basename(p) for p in pngs]}
    write_json(os.path.join(output, "summary.json"), summary)
    return summary
