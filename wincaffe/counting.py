"""Multiply accounting: exact counts per layer and per forward pass of one image.

Each layer that multiplies implements two methods of :class:`wincaffe.layer.Layer`:
``count_mults()`` (from its shapes and weights: what the dense algorithm does, what
the masks leave, the transforms) and ``count_sparse_mults(bottoms)`` (right after a
forward: the products whose operands are both nonzero). This module holds the pure
helpers they use and the walk that sums them over a net; it names no layer type.
:func:`memory_traffic` counts the bytes each layer pass moves, for ``wincaffe time``.

The counts (all real multiplies, per image):
    direct           K·C·r²·Ho·Wo of a direct convolution (InnerProduct: K·D per row, one
                     row per sample unless ``axis`` > 1 leaves several)
    direct_sparse    the direct products with a nonzero weight and a nonzero input,
                     counted exactly by correlating the 0/1 patterns (Liu et al. §4:
                     "pruned + sparse activations")
    winograd         α²·K·C·T, the element-wise stage of F(m×m, r×r) on T tiles
    winograd_sparse  Σ_ξ Σ_c nnz(U[ξ, :, c]) · nnz(V[ξ, c, :]): the element-wise products
                     whose transform-domain weight and activation are both nonzero
    fft              4·K·C·Fh·(Fw/2 + 1): one complex product per half-spectrum entry and
                     (n, k, c), at 4 real multiplies each (Liu & Turakhia §3.1: "elementwise
                     product requires 4n² multiplications"; Gauss's trick would make it 3)
    fft_masked       4·Σ M: the complex products the spectral mask leaves
    transforms       the multiplies of the input, kernel and output transforms, which
                     the sources leave out of 1–6 (Liu et al. count only the products):
                     Winograd: per tile and channel 2α·n(Bᵀ) for V = Bᵀ d B, per tile and
                     filter (α + m)·n(Aᵀ) for Aᵀ M A, per kernel (r + α)·n(G) for G W Gᵀ when
                     the weights are spatial, where n(X) counts the entries of X that are
                     not 0 or ±1. FFT: Fh·Fw·log₂(Fh·Fw) real multiplies per real 2-D FFT or
                     inverse (radix-2: (n/2)·log₂ n complex multiplies for n points, 4 real
                     each, halved for real data), rounded; C input FFTs, K inverse FFTs and,
                     for spatial weights, K·C kernel FFTs.
"""
import math

import numpy as np

COUNTS = ("direct", "direct_sparse", "winograd", "winograd_sparse", "fft", "fft_masked", "transforms")


def nontrivial_entries(matrix):
    """How many entries of ``matrix`` are not 0, 1 or −1 (those cost a multiply)."""
    return sum(1 for row in matrix for x in row if abs(x) not in (0, 1))


def rfft2_mults(fh, fw):
    """Real multiplies of one real 2-D FFT (or inverse) of Fh × Fw: round(n·log₂ n), n = Fh·Fw."""
    n = int(fh) * int(fw)
    return int(round(n * math.log2(n))) if n > 1 else 0


def conv_nonzero_products(x, w, pad=0, stride=1, dilation=1):
    """Σ over the batch of the direct-convolution products w[k,c,u,v]·x_pad[n,c,i·s+u·d, j·s+v·d]
    with both factors nonzero: an exact integer.

    x (N, C, H, W), w (K, C, kh, kw). Uses Σ_{k,n,i,j} [w≠0][x≠0] =
    Σ_{c,u,v} nnz_k(w[:, c, u, v]) · nnz_{n,i,j}(x_pad[:, c, u·d + i·s, v·d + j·s])."""
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    xb = np.pad(x != 0, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (H + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (W + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    wcount = np.count_nonzero(w, axis=0).astype(np.int64)             # (C, kh, kw)
    total = 0
    for u in range(kh):
        for v in range(kw):
            window = xb[:, :, u * dilation:u * dilation + (oh - 1) * stride + 1:stride,
                        v * dilation:v * dilation + (ow - 1) * stride + 1:stride]
            total += int(wcount[:, u, v] @ np.count_nonzero(window, axis=(0, 2, 3)).astype(np.int64))
    return total


def dense_nonzero_products(x, w):
    """x (N, D) inputs, w (K, D) weights: Σ_n Σ_d [x[n,d]≠0]·nnz(w[:, d]), exact."""
    return int(np.count_nonzero(x, axis=0).astype(np.int64) @ np.count_nonzero(w, axis=0).astype(np.int64))


def winograd_nonzero_products(U, V):
    """U (α², K, C), V (α², C, T·N): Σ_ξ Σ_c nnz(U[ξ, :, c]) · nnz(V[ξ, c, :]), exact."""
    nu = np.count_nonzero(U, axis=1).astype(np.int64)                 # (α², C)
    nv = np.count_nonzero(V, axis=2).astype(np.int64)                 # (α², C)
    return int((nu * nv).sum())


# ----- the walk over a net -----------------------------------------------------------------

def count_net(net, batches=0):
    """Per layer that multiplies: its counts per image (dense from ``count_mults``; the
    sparse ones averaged over ``batches`` forward passes of the net's data, with the
    activation density's mean and standard deviation over those batches), then a total.

    Returns ``(rows, total)``; a count a layer cannot give (e.g. ``winograd`` for a
    direct convolution) is None (see :func:`total_row` for the total)."""
    rows, order = {}, []
    for layer in net.layers:
        counts = layer.count_mults()
        if counts is None:
            continue
        row = {"name": layer.name, "type": layer.type_name}
        row.update({k: counts.get(k) for k in COUNTS})
        row["weight_density"] = counts.get("weight_density")
        row["weight_domain"] = counts.get("weight_domain")
        rows[layer.name] = row
        order.append(layer.name)
    if batches:
        sums, dens = {}, {}
        for layer in net.layers:
            layer.rewind()

        def observe(layer, bottoms, tops):
            if layer.name not in rows:
                return
            got = layer.count_sparse_mults(bottoms)
            if got:
                acc = sums.setdefault(layer.name, {})
                for k, v in dict(got, images=bottoms[0].shape[0]).items():
                    acc[k] = acc.get(k, 0) + v
            ad = layer.activation_density(bottoms)
            if ad is not None:
                dens.setdefault(layer.name, (ad[0], []))[1].append(ad[1])
        for _ in range(batches):
            net.forward(observe=observe)
        for name, acc in sums.items():
            images = acc.pop("images")            # each layer's own batch: its bottom's first axis
            for k, v in acc.items():
                rows[name][k] = int(round(v / images))
        for name, (domain, values) in dens.items():
            rows[name]["activation_domain"] = domain
            rows[name]["activation_density"] = float(np.mean(values))
            rows[name]["activation_density_std"] = float(np.std(values))
    out = [rows[n] for n in order]
    return out, total_row(out)


def gemm_flops_per_iteration(net):
    """Floating-point operations of one training iteration of ``net`` done as direct
    GEMMs (2 per multiply-add): for every layer with a ``direct`` count, the forward
    product, and where the layer runs backward the weight gradient and, where the net
    propagates to the layer's bottom, the input gradient:
    2 · direct · batch · (1 + backward · (1 + propagates)). Divided by a measured sgemm
    rate it is the time an im2col + GEMM implementation of the net cannot beat (not a
    bound for Winograd or FFT layers, which do fewer multiplies); the benchmarks print
    it beside each measured net time."""
    flops = 0
    for i, layer in enumerate(net.layers):
        counts = layer.count_mults()
        if not counts or counts.get("direct") is None:
            continue
        batch = net.bottom_vecs[i][0].shape[0]
        backward = bool(net.layer_needs_backward[i])
        flops += 2 * counts["direct"] * batch * (1 + backward * (1 + bool(net.propagate_down[i][0])))
    return flops


def memory_traffic(net):
    """Bytes each layer's forward and backward read and write, one dict per layer
    ``{"name", "type", "forward", "backward"}`` (backward 0 where the net does not run
    it), from ``Layer.memory_traffic``: every array a pass touches counted once per read
    and once per write. A count, not a measurement: divided by a pass's time it is the
    bandwidth the pass reached (``wincaffe time`` prints it)."""
    rows = []
    for i, layer in enumerate(net.layers):
        fwd, bwd = layer.memory_traffic(net.bottom_vecs[i], net.top_vecs[i], net.propagate_down[i])
        rows.append({"name": layer.name, "type": layer.type_name, "forward": int(fwd),
                     "backward": int(bwd) if net.layer_needs_backward[i] else 0})
    return rows


# What a layer without a count runs instead, in the net's total of that count.
STAND_IN = {"direct": (), "direct_sparse": ("direct",), "winograd": ("direct",),
            "winograd_sparse": ("direct_sparse", "direct"), "fft": ("direct",), "fft_masked": ("direct",),
            "transforms": ()}


def total_row(rows):
    """Each count summed over the layers. A layer without that count contributes what
    it runs instead (``STAND_IN``: e.g. a direct convolution or an InnerProduct adds its
    ``direct`` count to the ``winograd`` total, and its ``direct_sparse`` to the
    ``winograd_sparse`` total), so a total is the cost of the whole net with its fast
    layers on that algorithm. None where no layer has the count at all."""
    total = {"name": "total", "type": ""}
    for key in COUNTS:
        if all(r.get(key) is None for r in rows):
            total[key] = None
            continue
        s = 0
        for r in rows:
            for k in (key,) + STAND_IN[key]:
                if r.get(k) is not None:
                    s += r[k]
                    break
        total[key] = s
    return total


def reductions(row):
    """direct / count for each count of the products (not the transforms) of ``row``
    (None where a count is missing or 0)."""
    d = row.get("direct")
    return {k: (d / row[k] if d and row.get(k) else None) for k in COUNTS if k not in ("direct", "transforms")}


def mults_report(net, batches=0):
    """The rows of ``wincaffe mults``: per layer and a total, each with its counts,
    densities and ``reduction_<count>`` = direct / count. JSON-ready. ``images``: the
    images the sparse counts were measured on (batches × the net's data batch)."""
    rows, total = count_net(net, batches)
    for row in rows + [total]:
        for k, v in reductions(row).items():
            row[f"reduction_{k}"] = v
    return {"net": net.name, "batches": batches, "images": batches * net.batch_size(),
            "real_multiplies_per_complex_product": 4, "layers": rows, "total": total}
