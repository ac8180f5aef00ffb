"""Magnitude pruning in the spatial, Winograd and FFT domains.

Pure functions (masks from scores, schedules) plus a walk over a net's layers
through the pruning protocol of :class:`wincaffe.layer.Layer`; no layer type is
named here. The method is Han et al.'s, in the domain where the products happen:
keep the entries of largest magnitude, zero the rest, retrain with the mask
fixed (Liu et al. §2; Liu & Turakhia §3.1–3.2, §4.1).

Rates and counts. A rate R is the fraction of entries pruned. In each scope unit
of n entries exactly round(R·n) entries are pruned (halves round up), the smallest
scores first, ties broken by position (first entries first), so masks are
deterministic. Entries already pruned are pruned first and stay pruned: masks
only shrink, and a rate below the current one changes nothing. Entries that must
go together (a layer's ``prune_partners``: the conjugate pairs of an FFT half
spectrum) are kept or pruned as one; where a pair would overshoot round(R·n) by
one, the next single entry is pruned instead (where no single is left, the pair
replaces the last single taken; only if there is none either is the count one over).

Scopes:
    layer   one threshold per layer (Liu et al. §2, Liu & Turakhia §4.1)
    kernel  one per (k, c) kernel (Liu & Turakhia prune "per channel")
    filter  whole output filters k, the round(R·K) of smallest Frobenius norm of their
            weights in the domain (structured; the future work in Chen's slides)
    global  one threshold over all chosen layers, which must share one domain
            (magnitudes of different domains are not comparable)

Schedules: ``oneshot``; ``rounds`` (a rising list of rates, each followed by
retraining); ``agp``, gradual pruning (Zhu & Gupta 2017):
    s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(n·Δt))³,  t = t₀, t₀ + Δt, …, t₀ + n·Δt.
"""
import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from wincaffe.errors import ConfigError

SCOPES = ("layer", "kernel", "filter", "global")
DOMAINS = ("spatial", "winograd", "spectral")
SCHEDULES = ("oneshot", "rounds", "agp")


def check_rate(rate, option="--rate"):
    """``rate`` as a float in [0, 1], else a ConfigError naming ``option``."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ConfigError(f"must be a number in [0, 1], got {rate!r}", field=option) from None
    if not 0.0 <= r <= 1.0 or math.isnan(r):
        raise ConfigError(f"must be in [0, 1] (the fraction of entries pruned), got {rate!r}", field=option)
    return r


def prune_count(rate, n):
    """round(R·n), halves rounded up: how many of ``n`` entries a rate prunes. R is taken
    as written (its shortest decimal form), so 0.58 of 25 is 14.5 → 15, not 14 as
    floor(0.58·25 + 0.5) gives in binary floating point."""
    exact = Decimal(repr(check_rate(rate))) * int(n)
    return min(int(n), int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


# ----- selecting what to prune ------------------------------------------------------------

def _groups(n, partner):
    """Members of the prune groups of one unit of ``n`` entries: ``first`` (G,) and
    ``second`` (G,), -1 where a group is a single entry."""
    if partner is None:
        return np.arange(n), np.full(n, -1)
    partner = np.asarray(partner, np.intp)
    if partner.shape != (n,) or not np.array_equal(partner[partner], np.arange(n)):
        raise ValueError(f"partners must be an involution on {n} entries")
    first = np.flatnonzero(partner >= np.arange(n))
    second = np.where(partner[first] != first, partner[first], -1)
    return first, second


def select(scores, pinned, targets, partner=None):
    """Which entries to prune, row by row: a bool array shaped like ``scores``.

    scores  (rows, n) magnitudes; pinned (rows, n) bool, entries already pruned;
    targets (rows,) how many to prune per row; partner (n,) or None, see module doc.
    Per row: the pinned entries, then the smallest scores (ties: lowest index), up
    to exactly the target; groups of two never split.
    """
    scores = np.asarray(scores, np.float64)
    rows, n = scores.shape
    targets = np.broadcast_to(np.asarray(targets, np.int64), (rows,))
    first, second = _groups(n, partner)
    pair = second >= 0
    gscore = scores[:, first].copy()
    gpin = pinned[:, first].copy()
    if pair.any():
        gscore[:, pair] = np.maximum(gscore[:, pair], scores[:, second[pair]])
        gpin[:, pair] |= pinned[:, second[pair]]
    size = np.where(pair, 2, 1)
    key = np.where(gpin, -np.inf, gscore)
    order = np.argsort(key, axis=1, kind="stable")
    size_sorted = size[order]
    take = np.cumsum(size_sorted, axis=1) <= targets[:, None]
    pin_sorted = np.take_along_axis(gpin, order, axis=1)
    take |= pin_sorted
    short = (size_sorted * take).sum(axis=1) < targets     # one slot left before a pair
    for r in np.flatnonzero(short):
        single = np.flatnonzero(~take[r] & (size_sorted[r] == 1))
        if single.size:                                     # the next single entry instead
            take[r, single[0]] = True
            continue
        swap = np.flatnonzero(take[r] & (size_sorted[r] == 1) & ~pin_sorted[r])
        if swap.size:                                       # only pairs left: trade a single for one
            take[r, swap[-1]] = False
        take[r, np.flatnonzero(~take[r] & (size_sorted[r] == 2))[0]] = True
    gtake = np.zeros_like(take)
    np.put_along_axis(gtake, order, take, axis=1)
    pruned = np.zeros((rows, n), bool)
    pruned[:, first] = gtake
    pruned[:, second[pair]] = gtake[:, pair]
    return pruned


def magnitude_mask(scores, rate, *, scope="layer", current=None, partner=None):
    """The 0/1 mask (float, shaped like ``scores``) that prunes ``rate`` of one layer.

    scores (K, C, ...) magnitudes in one domain; ``current`` the layer's mask now (its
    zeros stay zeros); ``partner`` over the trailing axes (flattened), see module doc.
    Scope ``layer``, ``kernel`` or ``filter`` (``global`` spans layers:
    :func:`global_masks`)."""
    scores = np.asarray(scores)
    pinned = np.zeros(scores.shape, bool) if current is None else (np.asarray(current) == 0)
    if scope == "layer":
        flat_partner = None
        if partner is not None:   # the same partner map in every (k, c) kernel
            per = int(np.prod(scores.shape[2:]))
            offsets = np.arange(scores.shape[0] * scores.shape[1])[:, None] * per
            flat_partner = (np.asarray(partner)[None, :] + offsets).reshape(-1)
        pruned = select(scores.reshape(1, -1), pinned.reshape(1, -1),
                        prune_count(rate, scores.size), flat_partner)
    elif scope == "kernel":
        if scores.ndim < 3:
            raise ValueError("kernel scope needs (K, C, ...) kernels")
        per = int(np.prod(scores.shape[2:]))
        pruned = select(scores.reshape(-1, per), pinned.reshape(-1, per), prune_count(rate, per), partner)
    elif scope == "filter":
        K = scores.shape[0]
        sq = np.asarray(scores, np.float64).reshape(K, -1) ** 2
        norms = np.sqrt(sq.sum(axis=1))
        dead = pinned.reshape(K, -1).all(axis=1)
        gone = select(norms[None, :], dead[None, :], prune_count(rate, K))[0]
        pruned = pinned.reshape(K, -1) | gone[:, None]
    else:
        raise ValueError(f"unknown scope {scope!r} (one of {', '.join(SCOPES[:3])}; global: global_masks)")
    return (~pruned).reshape(scores.shape).astype(np.float32)


def global_masks(scores_list, rate, *, currents=None, partners=None):
    """Masks for several layers pruned with one threshold: round(R·Σn) entries in all."""
    currents = currents or [None] * len(scores_list)
    partners = partners or [None] * len(scores_list)
    flat, pins, maps, offset = [], [], [], 0
    for scores, current, partner in zip(scores_list, currents, partners):
        s = np.asarray(scores, np.float64)
        flat.append(s.reshape(-1))
        pins.append(np.zeros(s.size, bool) if current is None else (np.asarray(current).reshape(-1) == 0))
        if partner is None:
            maps.append(np.arange(s.size) + offset)
        else:
            per = int(np.prod(s.shape[2:]))
            kernels = np.arange(s.shape[0] * s.shape[1])[:, None] * per
            maps.append((np.asarray(partner)[None, :] + kernels).reshape(-1) + offset)
        offset += s.size
    pruned = select(np.concatenate(flat)[None], np.concatenate(pins)[None],
                    prune_count(rate, offset), np.concatenate(maps))[0]
    out, start = [], 0
    for scores in scores_list:
        n = np.size(scores)
        out.append((~pruned[start:start + n]).reshape(np.shape(scores)).astype(np.float32))
        start += n
    return out


# ----- schedules ----------------------------------------------------------------------------

def agp_rate(t, *, initial, final, start, steps, interval):
    """Zhu & Gupta's gradual sparsity s_t at iteration ``t`` (clamped outside
    [t₀, t₀ + n·Δt]): s_f + (s_i − s_f)·(1 − (t − t₀)/(n·Δt))³."""
    span = steps * interval
    if span <= 0 or t >= start + span:
        return float(final)
    if t <= start:
        return float(initial)
    return float(final + (initial - final) * (1.0 - (t - start) / span) ** 3)


def agp_plan(final, iterations, *, initial=0.0, steps=10):
    """[(iteration, rate)] of an AGP schedule over ``iterations`` of retraining: n =
    ``steps`` mask updates Δt = ⌊N/2/n⌋ apart in the first half, so the second half
    retrains with the final masks fixed. Needs N ≥ 2n (else a ConfigError)."""
    if steps < 1:
        raise ConfigError(f"must be >= 1, got {steps}", field="--agp-steps")
    interval = (iterations // 2) // steps
    if interval < 1:
        raise ConfigError(f"the agp schedule needs at least 2 x --agp-steps = {2 * steps} retraining iterations, "
                          f"got {iterations}", field="--retrain-iters")
    return [(j * interval, agp_rate(j * interval, initial=initial, final=final, start=0,
                                    steps=steps, interval=interval))
            for j in range(1, steps + 1)]


# ----- the walk over a net ----------------------------------------------------------------------

class Target:
    """One layer to prune and the domain it is pruned in."""

    __slots__ = ("layer", "domain")

    def __init__(self, layer, domain):
        self.layer, self.domain = layer, domain

    @property
    def name(self):
        return self.layer.name

    def __repr__(self):
        return f"Target({self.layer.name!r}, {self.domain!r})"


def prunable_layers(net):
    """The layers of ``net`` with at least one prune domain."""
    return [l for l in net.layers if l.prune_domains()]


def select_targets(net, layers=None, *, skip_first=False, domain=None):
    """The layers to prune: ``layers`` (names) or, by default, every layer that
    prunes by default (the convolutions); ``skip_first`` leaves the first of them
    dense (Liu et al.). ``domain`` None: each layer's own first domain."""
    prunable = prunable_layers(net)
    if layers is not None and not layers:
        raise ConfigError("names no layer", field="--layers")
    if layers:
        by_name = {l.name: l for l in net.layers}
        chosen = []
        for name in layers:
            if name not in by_name:
                have = ", ".join(l.name for l in prunable) or "none"
                raise ConfigError(f"no layer named '{name}' in net '{net.name}' (prunable layers: {have})",
                                  field="--layers")
            layer = by_name[name]
            if not layer.prune_domains():
                raise ConfigError("has no prunable domain (it has no weights to prune)",
                                  layer=name, layer_type=layer.type_name, field="--layers")
            if layer not in chosen:
                chosen.append(layer)
    else:
        chosen = [l for l in prunable if l.prune_by_default]
        if not chosen:
            raise ConfigError(f"net '{net.name}' has no layer pruned by default; name them with --layers",
                              field="--layers")
    if skip_first:
        chosen = chosen[1:]
        if not chosen:
            raise ConfigError("--skip-first leaves no layer to prune", field="--skip-first")
    if domain is not None and domain not in DOMAINS:
        raise ConfigError(f"must be one of {', '.join(DOMAINS)}, got {domain!r}", field="--domain")
    targets = []
    for layer in chosen:
        d = domain or layer.prune_domains()[0]
        if d not in layer.prune_domains():
            raise ConfigError(f"cannot be pruned in the {d!r} domain (its domains: "
                              f"{', '.join(layer.prune_domains())})", layer=layer.name,
                              layer_type=layer.type_name, field="--domain")
        targets.append(Target(layer, d))
    return targets


def check_scope(targets, scope):
    """A ConfigError unless ``scope`` can prune ``targets``: a known scope; global
    over one domain only; kernel scope only for layers whose weights have kernels."""
    if scope not in SCOPES:
        raise ConfigError(f"must be one of {', '.join(SCOPES)}, got {scope!r}", field="--scope")
    if scope == "global" and len({t.domain for t in targets}) > 1:
        which = ", ".join(f"{t.name} ({t.domain})" for t in targets)
        raise ConfigError(f"global scope over layers of different domains: {which}; their magnitudes are "
                          "not comparable (choose one domain with --domain, or another scope)", field="--scope")
    if scope == "kernel":
        for t in targets:
            shape = t.layer.prune_scores(t.domain).shape
            if len(shape) < 3:
                raise ConfigError(f"kernel scope needs kernels, but its {t.domain} weights are {shape} "
                                  "(use scope layer or filter)", layer=t.name, layer_type=t.layer.type_name,
                                  field="--scope")


def _scores(target):
    scores = target.layer.prune_scores(target.domain)
    if not np.isfinite(scores).all():
        raise ConfigError(f"has non-finite {target.domain} weights (NaN or infinity): nothing to rank them by",
                          layer=target.name, layer_type=target.layer.type_name)
    return scores


def compute_masks(targets, rate, scope="layer"):
    """{layer name: new mask} for pruning ``rate`` of each target in ``scope``."""
    check_scope(targets, scope)
    rate = check_rate(rate)
    if scope == "global":
        masks = global_masks([_scores(t) for t in targets], rate,
                             currents=[t.layer.mask(t.domain) for t in targets],
                             partners=[t.layer.prune_partners(t.domain) for t in targets])
        return {t.name: m for t, m in zip(targets, masks)}
    return {t.name: magnitude_mask(_scores(t), rate, scope=scope,
                                   current=t.layer.mask(t.domain), partner=t.layer.prune_partners(t.domain))
            for t in targets}


def apply_masks(targets, masks):
    for t in targets:
        t.layer.set_mask(t.domain, masks[t.name])


def prune(targets, rate, scope="layer"):
    """Compute and install the masks for ``rate``; returns :func:`density_rows`."""
    apply_masks(targets, compute_masks(targets, rate, scope))
    return density_rows(targets)


def density_rows(targets):
    """Per target: name, type, domain, entries, pruned (mask zeros), nonzero (weights
    in the domain that are not zero) and density = nonzero / entries; then a total."""
    rows = []
    for t in targets:
        scores = t.layer.prune_scores(t.domain)
        mask = t.layer.mask(t.domain)
        rows.append({"name": t.name, "type": t.layer.type_name, "domain": t.domain,
                     "entries": int(scores.size), "pruned": int(np.count_nonzero(mask == 0)),
                     "nonzero": int(np.count_nonzero(scores)),
                     "density": float(np.count_nonzero(scores)) / scores.size})
    return rows


def total_row(rows):
    entries = sum(r["entries"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    return {"name": "total", "type": "", "domain": ",".join(sorted({r["domain"] for r in rows})),
            "entries": entries, "pruned": sum(r["pruned"] for r in rows), "nonzero": nonzero,
            "density": nonzero / entries if entries else 0.0}
