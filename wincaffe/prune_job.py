"""``wincaffe prune``: dense weights in, pruned and retrained weights plus a report out.

    test dense → [prune → test → retrain → test] per round → weights file + report

The weights file is an ordinary one with the masks inside (``wincaffe test``
reproduces the reported accuracy; ``wincaffe train --weights`` retrains with the
masks fixed). Retraining is the solver of the solver file, with its learning rate
policy restarted at iteration 0 for each round (``base_lr`` may be overridden), no periodic
snapshots and no periodic tests: the job tests before and after, always on the
same images (the first ``test_iterations`` batches of the TEST data).

``sensitivity``: for each chosen layer alone, the test accuracy against the rate
without retraining (the classic pruning-sensitivity scan), as a table and a PNG.
"""
import os
import sys
import time

from wincaffe import pruning
from wincaffe.config import load_solver_spec
from wincaffe.errors import ConfigError
from wincaffe.log import get_logger
from wincaffe.report import Column, format_table, write_csv, write_json
from wincaffe.snapshot import load_weights, load_weights_arrays, save_weights, weights_arrays

log = get_logger("prune")

LAYER_COLUMNS = [Column("name", "layer"), Column("type"), Column("domain"), Column("entries"),
                 Column("pruned"), Column("nonzero"), Column("density", "density", "{:.2%}")]
LAYER_KEYS = ["name", "type", "domain", "entries", "pruned", "nonzero", "density"]
DEFAULT_SENSITIVITY_RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def parse_rates(text, option="--rates"):
    """'0.5,0.7,0.9' -> [0.5, 0.7, 0.9], each in [0, 1]."""
    items = [t for t in str(text).replace(" ", "").split(",") if t]
    if not items:
        raise ConfigError("needs at least one rate, e.g. 0.5,0.7,0.9", field=option)
    return [pruning.check_rate(t, option) for t in items]


def accuracy_of(outputs):
    """The accuracy among a test's outputs (the first output named like 'accuracy')."""
    for name, value in outputs.items():
        if "accuracy" in name:
            return value
    raise ConfigError(f"the TEST net has no accuracy output (outputs: {', '.join(outputs) or 'none'})")


class PruneJob:
    """Set up once from the arguments of ``wincaffe prune``; :meth:`run` or
    :meth:`sensitivity` do the work and return the report (a dict)."""

    def __init__(self, solver, weights, *, net=None, layers=None, skip_first=False, domain=None,
                 scope="layer", test_iterations=None, base_lr=None, output=".", prefix=None,
                 dtype=None, progress=None, seed=None):
        """``solver``: a solver file or a validated solver spec; ``weights``: a weights
        file or its arrays (as :func:`wincaffe.snapshot.weights_arrays` gives);
        ``seed`` overrides the solver's random_seed (repeats of one experiment)."""
        from wincaffe.solver import Solver
        import numpy as np
        spec = load_solver_spec(solver) if isinstance(solver, (str, os.PathLike)) else solver
        if net:
            spec["net"] = net
        if seed is not None:
            spec["random_seed"] = int(seed)
        if test_iterations is not None:
            if test_iterations < 1:
                raise ConfigError(f"must be >= 1, got {test_iterations}", field="--test-iterations")
            spec["test_iter"] = test_iterations
        if not spec.test_iter:
            raise ConfigError("the solver has no test_iter: give --test-iterations", source=solver)
        if base_lr is not None:
            if not base_lr > 0:
                raise ConfigError(f"must be > 0, got {base_lr}", field="--base-lr")
            spec["base_lr"] = float(base_lr)
        spec["snapshot"] = 0
        spec["test_interval"] = 0
        self.spec, self.weights, self.scope, self.output = spec, weights, scope, output
        if prefix is None:   # the net file's name, or a net given as a mapping: its name
            prefix = (os.path.splitext(os.path.basename(spec.net))[0] if isinstance(spec.net, str)
                      else str(spec.net.get("name", "net")))
        self.prefix = prefix
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.solver = Solver(spec, output_dir=output, dtype=dtype or np.float32, progress=False)
        if isinstance(weights, dict):
            n = load_weights_arrays(self.solver.net, weights, "the dense weights", strict=True)
            self.weights = "(arrays)"
        else:
            n = load_weights(self.solver.net, weights, strict=True)
        log.info(f"Loaded {n} params from {self.weights}")
        self.targets = pruning.select_targets(self.solver.net, layers, skip_first=skip_first, domain=domain)
        log.info("Pruning " + ", ".join(f"{t.name} ({t.domain})" for t in self.targets) + f", {scope} scope")

    # ----- pieces ---------------------------------------------------------------------------
    def test(self, label):
        acc = accuracy_of(self.solver.test(rewind=True))
        log.info(f"Test accuracy ({label}): {acc:.4f}")
        return acc

    def prune_to(self, rate):
        rows = pruning.prune(self.targets, rate, self.scope)
        for r in rows:
            log.info(f"    {r['name']} ({r['domain']}): {r['pruned']} of {r['entries']} entries pruned, "
                     f"density {r['density']:.2%}")
        return rows

    def retrain(self, iterations, plan=None):
        """``iterations`` solver steps from iteration 0 of the solver's learning-rate
        policy (every round starts it again); ``plan`` [(iteration, rate)]: masks
        recomputed at those iterations (AGP)."""
        if iterations <= 0:
            return
        self.solver.iter = 0
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=iterations, unit="it", desc="retrain", dynamic_ncols=True, file=sys.stderr,
                       leave=False)
        try:
            done = 0
            for at, rate in (plan or []):
                self.solver.step(at - done, bar)
                done = at
                log.info(f"Iteration {self.solver.iter}, AGP: pruning to rate {rate:.4f}")
                self.prune_to(rate)
            self.solver.step(iterations - done, bar)
        finally:
            if bar is not None:
                bar.close()

    def retrain_length(self, iters=None, epochs=None):
        if iters is not None and epochs is not None:
            raise ConfigError("give --retrain-iters or --retrain-epochs, not both", field="--retrain-epochs")
        if iters is not None:
            if iters < 0:
                raise ConfigError(f"must be >= 0, got {iters}", field="--retrain-iters")
            return int(iters)
        epoch = self.solver.net.epoch_length()
        if epoch is None:
            if epochs is not None:
                raise ConfigError("the TRAIN net has no data layer to count epochs of: give --retrain-iters",
                                  field="--retrain-epochs")
            raise ConfigError("the TRAIN net has no data layer: give --retrain-iters", field="--retrain-iters")
        epochs = 1.0 if epochs is None else float(epochs)
        if not (0 <= epochs < 1e6):            # also refuses NaN and infinity
            raise ConfigError(f"must be a number of epochs >= 0, got {epochs:g}", field="--retrain-epochs")
        return int(round(epochs * epoch))

    # ----- the job ----------------------------------------------------------------------------
    def run(self, *, schedule="oneshot", rate=None, rates=None, retrain_iters=None, retrain_epochs=None,
            agp_steps=10, save=True, before_pruning=None):
        """Prune on ``schedule``, retrain, test; with ``save`` write the weights file and
        the report beside it. ``before_pruning(job)`` runs after the dense test."""
        t0 = time.perf_counter()
        if schedule not in pruning.SCHEDULES:
            raise ConfigError(f"must be one of {', '.join(pruning.SCHEDULES)}, got {schedule!r}", field="--schedule")
        if schedule == "rounds":
            if not rates:
                raise ConfigError("the rounds schedule needs --rates, e.g. 0.5,0.7,0.9", field="--rates")
            if any(b < a for a, b in zip(rates, rates[1:])):
                raise ConfigError("must not decrease (masks only shrink)", field="--rates")
            if rate is not None and abs(rate - rates[-1]) > 1e-12:
                raise ConfigError(f"--rate {rate:g} differs from the last of --rates ({rates[-1]:g})",
                                  field="--rate")
            steps = list(rates)
        else:
            if rate is None:
                raise ConfigError(f"the {schedule} schedule needs --rate", field="--rate")
            steps = [pruning.check_rate(rate)]
        pruning.check_scope(self.targets, self.scope)
        n = self.retrain_length(retrain_iters, retrain_epochs)
        if schedule == "agp":
            pruning.agp_plan(steps[-1], n, steps=agp_steps)     # a ConfigError now, not after the dense test

        acc_dense = self.test("dense")
        if before_pruning is not None:
            before_pruning(self)
        rounds = []
        for r in steps:
            if schedule == "agp":   # the oneshot view of the final masks, then the gradual run
                saved = {k: v.copy() for k, v in weights_arrays(self.solver.net).items()}
                self.prune_to(r)
                acc_pruned = self.test(f"pruned oneshot to {r:g}, before retraining")
                load_weights_arrays(self.solver.net, saved, "the dense weights")
                current = 1.0 - pruning.total_row(pruning.density_rows(self.targets))["density"]
                plan = pruning.agp_plan(r, n, initial=current, steps=agp_steps)
                self.retrain(n, plan)
            else:
                log.info(f"Pruning to rate {r:g}")
                self.prune_to(r)
                acc_pruned = self.test(f"pruned to {r:g}")
                plan = None
                self.retrain(n)
            acc_retrained = self.test(f"rate {r:g}, after {n} retraining iterations") if n else acc_pruned
            rounds.append({"rate": r, "accuracy_pruned": acc_pruned, "accuracy_retrained": acc_retrained,
                           "retrain_iters": n, "agp_plan": plan})

        weights_out = os.path.join(self.output, f"{self.prefix}_pruned.npz") if save else None
        if save:
            save_weights(self.solver.net, weights_out)
        rows = pruning.density_rows(self.targets)
        report = {
            "net": self.solver.net.source or self.solver.net.name, "weights_in": self.weights,
            "weights_out": weights_out,
            "schedule": schedule, "scope": self.scope, "rate": steps[-1], "rates": steps,
            "retrain_iters": n, "base_lr": self.spec.base_lr,
            "test_images": self.solver.spec.test_iter * self.solver.test_net.batch_size(),
            "accuracy_dense": acc_dense, "accuracy_pruned": rounds[-1]["accuracy_pruned"],
            "accuracy_retrained": rounds[-1]["accuracy_retrained"],
            "layers": rows, "total": pruning.total_row(rows), "rounds": rounds,
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
        if save:
            self._write(report, rows, f"{self.prefix}_pruned")
        return report

    def sensitivity(self, rates=DEFAULT_SENSITIVITY_RATES):
        """Each target pruned alone at each rate, tested without retraining, restored
        (global scope: one layer alone is layer scope)."""
        t0 = time.perf_counter()
        scope = "layer" if self.scope == "global" else self.scope
        pruning.check_scope(self.targets, scope)
        dense = self.test("dense")
        saved = {k: v.copy() for k, v in weights_arrays(self.solver.net).items()}
        curves = {}
        for t in self.targets:
            accs = []
            for r in rates:
                pruning.prune([t], r, scope)
                accs.append(self.test(f"{t.name} alone pruned to {r:g}"))
                load_weights_arrays(self.solver.net, saved, "the dense weights")
            curves[t.name] = accs
        rows = [dict({"rate": r}, **{name: accs[i] for name, accs in curves.items()}) for i, r in enumerate(rates)]
        base = os.path.join(self.output, f"{self.prefix}_sensitivity")
        from wincaffe.plots import sensitivity_plot
        png = sensitivity_plot(base + ".png", list(rates), curves, dense,
                               f"{self.prefix}: each layer pruned alone, no retraining")
        report = {"net": self.solver.net.source or self.solver.net.name, "weights_in": self.weights,
                  "scope": self.scope,
                  "domains": {t.name: t.domain for t in self.targets}, "rates": list(rates),
                  "accuracy_dense": dense, "accuracy": curves, "plot": png,
                  "test_images": self.solver.spec.test_iter * self.solver.test_net.batch_size(),
                  "wall_seconds": round(time.perf_counter() - t0, 1)}
        keys = ["rate"] + list(curves)
        write_csv(base + ".csv", rows, keys)
        write_json(base + ".json", report)
        report["table"] = format_table(rows, [Column("rate", "rate", "{:.0%}")] +
                                       [Column(k, f"{k} ({t.domain})", "{:.2%}")
                                        for k, t in zip(curves, self.targets)])
        return report

    # ----- output -------------------------------------------------------------------------------
    def _write(self, report, rows, stem):
        base = os.path.join(self.output, stem)
        acc = {k: report[k] for k in ("accuracy_dense", "accuracy_pruned", "accuracy_retrained")}
        table_rows = [dict(r, **acc) for r in rows + [report["total"]]]
        write_csv(base + ".csv", table_rows, LAYER_KEYS + list(acc))
        write_json(base + ".json", report)
        report["report_files"] = [base + ".json", base + ".csv"]
        report["table"] = format_table(rows + [report["total"]], LAYER_COLUMNS)
