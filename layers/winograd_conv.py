"""WinogradConv: stride-1 convolution (Caffe's cross-correlation) by Winograd
minimal filtering F(m×m, r×r), with weights kept in the spatial or in the
Winograd domain, transform-domain pruning masks and Winograd-ReLU.

bottom (N, C, H, W) -> top (N, K, Ho, Wo), Ho = H + 2·pad − r + 1.

Tiles: the padded input is cut into α×α tiles (α = m + r − 1) at stride m,
th × tw = ⌈Ho/m⌉ × ⌈Wo/m⌉ tiles per image (T = th·tw); the last tile row and
column reach past the output and are cropped.

Forward (the gradient note, eq. 1; Liu & Turakhia, eq. 2; Liu et al., Fig. 1c):
    V = Bᵀ d B                  (α², C, N·T)   per tile and channel [ReLU(V) if winograd_relu]
    U                           (α², K, C)     from the weights, see below
    M[ξ] = U[ξ] @ V[ξ]          (α², K, N·T)   α² GEMMs over the whole batch
    Y = Aᵀ M A + b              (N, K, Ho, Wo) cropped
Backward:
    dM = A dY Aᵀ                (α², K, N·T)
    dU[ξ] = dM[ξ] @ V[ξ]ᵀ       (α², K, C)
    dV[ξ] = U[ξ]ᵀ @ dM[ξ]       (α², C, N·T)   [⊙ (V > 0) if winograd_relu]
    dX = Σ_tiles B dV Bᵀ        (N, C, H, W)   scatter-added, padding cropped

Weights (``winograd_param.weights``):
    spatial         param 0 = W (K, C, r, r); U = G W Gᵀ;  dW = Gᵀ dU G.
    spatial_masked  param 0 = W; U = (G W Gᵀ) ⊙ mask (Liu & Turakhia, eq. 2), mask (K, C, α, α)
                    a layer buffer (saved in weights files, shared with the TEST net;
                    all ones until pruning); dW = Gᵀ (dU ⊙ mask) G.
    winograd        param 0 = Q (K, C, α, α) = G W₀ Gᵀ at init (the gradient note, eq. 3);
                    U = Q; Param.diff = dL/dQ. ``gradient: preconditioned`` gives Q's
                    Param a preconditioner (G Gᵀ) · (G Gᵀ) (the gradient note, eq. 18) that
                    the solver applies before its λQ weight decay, which makes the update
                    the gradient note's eq. 27; ``raw`` steps along dL/dQ itself.
                    Pruning: ``Param.mask`` on Q (the solver keeps masked entries zero).
Param 1 = bias (K,) when ``bias_term``.

Pruning (the protocol of :class:`wincaffe.layer.Layer`): domain ``winograd``
(spatial_masked, winograd; scores |U|, Liu et al. §2, Liu & Turakhia §3.2) and
``spatial`` (spatial, spatial_masked; scores |W|, a ``Param.mask`` on W: Liu et al.
Fig. 1a). ``transformed_weights()`` gives U (K, C, α, α). Other attributes: ``m``,
``r``, ``alpha``, ``pad``, ``transform`` (the
:class:`~wincaffe.transforms.winograd.WinogradTransform`), ``AT, G, BT`` (in the
layer dtype), ``V`` (the last forward's transformed input, (α², C, N·T), after
the Winograd-ReLU: its density is the activation density of Liu et al., Fig. 3).

Sparse products (``winograd_param.sparse``: auto, on, off): with a transform-domain mask
the α² products skip the masked entries of U (a
:class:`~wincaffe.sparse_stage.SparseProducts`: sparse U × dense V, dU at the unmasked
entries only, so Q's ``Param.diff`` is zero at masked entries on that path; dV = Uᵀ dM
sparse); ``auto`` goes sparse when the mask's density is at most the measured break-even.

Quantization (``winograd_param.quantize``, off unless ``bits`` is set): the products
M[ξ] = U[ξ] @ V[ξ] become b-bit integer products with int32 sums, QW or channel-balanced
BQW (Chikin & Kryzhanovskiy, eq. A.1–A.4), by a
:class:`~wincaffe.quantized_stage.QuantizedStage`; in the TRAIN phase the backward is the
straight-through estimator (U and V replaced by their dequantized values, gradients cut
where clipped), which makes ``wincaffe train`` quantization-aware training.

Few input channels (C ≤ ``FUSED_MAX_C``, e.g. a 1-channel image): the α² "GEMMs" have
inner dimension C (an outer product for C = 1) and the cost is moving M / dM
(α², K, N·T), α²/m² times the output, through memory. Then the products are fused
into the tiling kernels (``product_transform_scatter``: M per work item, consumed by
the output transform in cache; ``gather_transform_grads``: dM per work item, reduced
to dU and dV in cache); same equations, M and dM are never stored whole.

The α² products go through :func:`wincaffe._kernels.gemm.batched_matmul` (shared
among the OpenMP threads when that pays). Tile columns of the (α², ·, N·T) arrays
are ordered (ty, n, tx); weights are
transformed for all K·C kernels by one GEMM with G ⊗ G (α², r²).
The math lives in :mod:`wincaffe.transforms.winograd` (matrices) and
:mod:`wincaffe._kernels.winograd_tiles` (tiling + transforms, through the CPU
dispatch in :mod:`wincaffe._kernels.winograd`); this module is bookkeeping.
"""
import numpy as np

from wincaffe import counting
from wincaffe._kernels.gemm import batched_matmul
from wincaffe._kernels.winograd import (gather_transform, gather_transform_grads,
                                       product_transform_scatter, transform_scatter)
from wincaffe.conv_geometry import conv_output_shape, require_4d, require_unit_stride
from wincaffe.fillers import fill
from wincaffe.layer import TRAIN, Layer, register
from wincaffe.quantized_stage import MODES as QUANT_MODES, QuantizedStage
from wincaffe.sparse_stage import SparseProducts, sparse_setting
from wincaffe.schema import Block, Field, convolution_block
from wincaffe.transforms.quantization import SCALES as QUANT_SCALES
from wincaffe.transforms.winograd import MAX_ALPHA, transform

WEIGHTS = ("spatial", "spatial_masked", "winograd")
# Up to this many input channels, the U ⊙ V products are fused into the tiling kernels
# (measured on LeNet's conv1 geometry: faster for C ≤ 2, the GEMMs win from C ≈ 4 on).
FUSED_MAX_C = 2
GRADIENTS = ("raw", "preconditioned")

@register("WinogradConv")
class WinogradConv(Layer):
    prune_by_default = True
    param_blocks = {
        "convolution_param": convolution_block(),
        "winograd_param": Block(
            tile=Field(int, 2, min=1, doc="m: output tile size, F(m×m, r×r)"),
            weights=Field(str, "spatial", choices=WEIGHTS,
                          doc="where the learnable weights live: spatial W, spatial W + "
                              "transform-domain mask, or Q in the Winograd domain"),
            gradient=Field(str, "preconditioned", choices=GRADIENTS,
                           doc="for weights: winograd, what the solver steps along: dL/dQ or "
                               "(G Gᵀ) dL/dQ (G Gᵀ) (the gradient note, eq. 18)"),
            points=Field((int, float, str), None, list_of=True,
                         doc="α − 1 finite interpolation points (infinity is added) or α points; "
                             "strings like '1/2' are exact"),
            winograd_relu=Field(bool, False, doc="ReLU on V = Bᵀ d B (Liu et al., Fig. 1c)"),
            sparse=Field((str, bool), "auto",
                         doc="skip masked products (sparse U × dense V): on, off, or auto (when the "
                             "mask's density is at most the measured break-even); YAML's bare "
                             "on / off (booleans) are accepted"),
            quantize=Block(
                doc="b-bit integer products (Chikin & Kryzhanovskiy); off unless bits is set",
                bits=Field(int, 0, min=0, max=16, doc="0: float products; 2..16 (≤ 8: int8 SIMD kernels)"),
                scales=Field(str, "tile", choices=QUANT_SCALES,
                             doc="one scale per tensor or per Winograd tile position (α×α)"),
                balance=Field(bool, False, doc="channel balancing Ω (BQW); false: plain QW"),
                mode=Field(str, "static", choices=QUANT_MODES,
                           doc="input scales calibrated (static) or from each batch (dynamic)"),
                fuse_balance=Field(bool, True, doc="fold Ω into the input scales (one multiply per "
                                                   "element); false applies it separately"),
            ),
        ),
    }
    quantization_block = ("winograd_param", "quantize")
    num_bottoms = 1
    num_tops = 1

    # ----- setup ------------------------------------------------------------------
    def setup(self, bottoms, tops):
        p = self.block("convolution_param")
        w = self.block("winograd_param")
        require_unit_stride(self, p)
        shape = bottoms[0].shape
        require_4d(self, shape)
        self.m, self.r, self.pad = w.tile, p.kernel_size, p.pad
        self.alpha = self.m + self.r - 1
        if w.points is None and self.alpha > MAX_ALPHA:
            raise self.error(f"tile {self.m} with kernel_size {self.r} gives α = {self.alpha} > {MAX_ALPHA} "
                             f"(the default points run out; the float error is huge anyway)",
                             field="winograd_param.tile")
        try:
            self.transform = transform(self.m, self.r, w.points)
        except ValueError as exc:
            raise self.error(str(exc), field="winograd_param.points") from None
        self.weights_mode, self.gradient_mode, self.winograd_relu = w.weights, w.gradient, w.winograd_relu
        AT, G, BT = self.transform.matrices(self.dtype)
        self.AT, self.G, self.BT = AT, G, BT
        self._A = np.ascontiguousarray(AT.T)       # (α, m): L of the output-side kernels
        self._BT = np.ascontiguousarray(BT)        # (α, α): L of the input-side kernels
        self.GGT = self.transform.GGT(self.dtype)  # (α, α), the gradient note, eq. 18
        # Per-kernel transforms of the weights as one GEMM over all K·C kernels each:
        # vec(G W Gᵀ) = (G ⊗ G) vec(W); vec(Gᵀ dU G) = (G ⊗ G)ᵀ vec(dU);
        # vec((G Gᵀ) dQ (G Gᵀ)) = (G Gᵀ ⊗ G Gᵀ) vec(dQ). Row-major vec, small matrices.
        G64 = self.transform.matrices(np.float64)[1]
        P64 = self.transform.GGT(np.float64)
        self._GG = np.kron(G64, G64).astype(self.dtype)   # (α², r²)
        self._PP = np.kron(P64, P64).astype(self.dtype)   # (α², α²), symmetric

        K, C, r, a = p.num_output, shape[1], self.r, self.alpha
        W0 = fill(p.weight_filler, (K, C, r, r), self.rng, self.dtype)
        if self.weights_mode == "winograd":
            Q = self.add_param("weight", G64 @ W0.astype(np.float64) @ G64.T)  # Q₀ = G W₀ Gᵀ
            if self.gradient_mode == "preconditioned":
                Q.preconditioner = self._precondition
        else:
            self.add_param("weight", W0)
        if p.bias_term:
            self.add_param("bias", fill(p.bias_filler, (K,), self.rng, self.dtype))
        if self.weights_mode == "spatial_masked":   # saved in weights files, shared with a TEST net
            self.add_buffer("winograd_mask", np.ones((K, C, a, a), self.dtype))
        self._geom = None
        self._U = None
        self.V = None
        self.quant = None
        self.sparse = SparseProducts(sparse_setting(self, w.sparse, "winograd_param.sparse"))
        self._sparse_pass = False
        if w.quantize.bits:
            if w.quantize.bits < 2:
                raise self.error("must be 0 (off) or 2..16", field="winograd_param.quantize.bits")
            self.quant = QuantizedStage(self, w.quantize, a * a, K, C, a)

    def _precondition(self, dQ, out):
        """out = (G Gᵀ) dQ (G Gᵀ) per (k, c) kernel (the gradient note, eq. 18), one GEMM."""
        a2 = self.alpha ** 2
        np.matmul(dQ.reshape(-1, a2), self._PP, out=out.reshape(-1, a2))

    def transformed_weights(self):
        """U (K, C, α, α): the weights the element-wise products use, i.e.
        G W Gᵀ (spatial), (G W Gᵀ) ⊙ mask (spatial_masked) or Q (winograd). A new array."""
        data = self.params[0].data
        if self.weights_mode == "winograd":
            return data.copy()
        K, C = data.shape[:2]
        a = self.alpha
        U = (data.reshape(K * C, -1) @ self._GG.T).reshape(K, C, a, a)
        if self.weights_mode == "spatial_masked":
            U *= self.buffers["winograd_mask"]
        return U

    # ----- pruning protocol ---------------------------------------------------------
    def prune_domains(self):
        return {"spatial": ("spatial",), "spatial_masked": ("winograd", "spatial"),
                "winograd": ("winograd",)}[self.weights_mode]

    def prune_scores(self, domain):
        self._check_domain(domain)
        return np.abs(self.transformed_weights()) if domain == "winograd" else self._param_scores()

    def mask(self, domain):
        self._check_domain(domain)
        if domain == "winograd" and self.weights_mode == "spatial_masked":
            return self.buffers["winograd_mask"].copy()
        return self._param_mask()      # Q's Param.mask (winograd) or W's (spatial)

    def set_mask(self, domain, mask):
        """winograd: spatial_masked writes the ``winograd_mask`` buffer in place (a TEST
        net sharing it sees it too), applied to G W Gᵀ in every forward (Liu & Turakhia);
        weights: winograd installs ``Param.mask`` on Q (masked entries zeroed now and kept
        zero by the solver). spatial: ``Param.mask`` on W."""
        self._check_domain(domain)
        if domain == "winograd" and self.weights_mode == "spatial_masked":
            buf = self.buffers["winograd_mask"]
            if mask is not None and np.shape(mask) != buf.shape:
                raise self.error(f"mask shape {np.shape(mask)} does not fit the Winograd domain {buf.shape}")
            buf[...] = 1 if mask is None else (np.asarray(mask) != 0)
        else:
            self._set_param_mask(mask)

    def check_loaded(self):
        if self.weights_mode == "spatial_masked":
            self._require_binary(self.buffers["winograd_mask"], "the winograd_mask buffer")
        if self.quant is not None:
            problem = self.quant.check_loaded()
            if problem:
                raise self.error(problem, field="winograd_param.quantize")

    # ----- quantization protocol (wincaffe.quantization) -------------------------------------
    def quantization(self):
        q = self.quant
        if q is None:
            return None
        return {"bits": q.bits, "scales": q.kind, "variant": q.variant, "mode": q.mode,
                "path": q.path, "calibrated": bool(q.calibrated)}

    def calibrate(self, on):
        if self.quant is not None:
            self.quant.calibrate(on)

    def execution(self):
        if self.quant is not None:
            return f"int{self.quant.bits} {self.quant.path}"
        if self.V is not None and self.V.shape[1] <= FUSED_MAX_C:
            return "dense fused"
        return self.sparse.describe()

    def _winograd_pattern(self):
        """The transform-domain mask as a (α², K, C) bool pattern (the layout of U), or None.
        It is a net workspace, which the next layer of the same shape overwrites: use it
        within this forward (SparseProducts keeps its own copy)."""
        if self.weights_mode == "spatial_masked":
            mask = self.buffers["winograd_mask"]
        elif self.weights_mode == "winograd" and self.params[0].mask is not None:
            mask = self.params[0].mask
        else:
            return None
        K, C = mask.shape[:2]
        pattern = self.workspace("winograd_pattern", (mask[0, 0].size, K, C), np.bool_)
        return np.not_equal(mask.reshape(K * C, -1).T.reshape(-1, K, C), 0, out=pattern)

    def activation_density(self, bottoms):
        return "winograd", float(np.count_nonzero(self.V)) / self.V.size

    # ----- multiply accounting (wincaffe.counting) ---------------------------------------
    def count_mults(self):
        K, C = self.params[0].shape[:2]
        m, r, a, t = self.m, self.r, self.alpha, self.transform
        T = self.th * self.tw
        U = self.transformed_weights()
        transforms = (C * T * 2 * a * counting.nontrivial_entries(t.BT_exact)          # V = Bᵀ d B
                      + K * T * (a + m) * counting.nontrivial_entries(t.AT_exact))     # Y = Aᵀ M A
        if self.weights_mode != "winograd":
            transforms += K * C * (r + a) * counting.nontrivial_entries(t.G_exact)     # U = G W Gᵀ
        return {"direct": K * C * r * r * self.Ho * self.Wo, "winograd": a * a * K * C * T,
                "transforms": transforms, "weight_domain": "winograd",
                "weight_density": float(np.count_nonzero(U)) / U.size}

    def count_sparse_mults(self, bottoms):
        out = {"winograd_sparse": counting.winograd_nonzero_products(self._U, self.V)}
        if self.weights_mode != "winograd":     # a spatial kernel exists: its direct products too
            out["direct_sparse"] = counting.conv_nonzero_products(bottoms[0].data, self.params[0].data, self.pad)
        return out

    # ----- reshape / forward / backward -------------------------------------------
    def reshape(self, bottoms, tops):
        N, C, H, W = bottoms[0].shape
        K, Cw = self.params[0].shape[:2]
        _, _, Ho, Wo = conv_output_shape(self, bottoms[0].shape, K, Cw, self.r, self.pad)
        tops[0].reshape((N, K, Ho, Wo), self.dtype)
        geom = (N, C, H, W)
        if self._geom != geom:
            m = self.m
            self._geom = geom
            self.Ho, self.Wo = Ho, Wo
            self.th, self.tw = -(-Ho // m), -(-Wo // m)
            self.NT = N * self.th * self.tw
            self.V = np.empty((self.alpha ** 2, C, self.NT), self.dtype)   # kept for backward

    def memory_traffic(self, bottoms, tops, propagate_down):
        """Forward: the input transform reads x and writes V (α², C, T); U (α², K, C) is made
        from the params and read by the products, which read V and write M (α², K, T) for
        the output transform (unless fused into it, C ≤ 2), which writes y. Backward: dY
        read (twice with db), dM written and read (unfused), V read, dU written and read for
        dW, dW and db written. Input gradient: U (and dM) read again, dV written and read
        by the transform that writes dx."""
        a2, K, C = self.alpha ** 2, self.params[0].shape[0], self.V.shape[1]
        item = self.dtype.itemsize
        x, y = bottoms[0].data.nbytes, tops[0].data.nbytes
        V, M, U = self.V.nbytes, a2 * K * self.NT * item, a2 * K * C * item
        params = sum(p.data.nbytes for p in self.params)
        unfused = C > FUSED_MAX_C
        forward = x + 2 * V + params + 2 * U + y + 2 * M * unfused
        backward = 2 * y + V + 2 * U + params + 2 * M * unfused
        if propagate_down[0]:
            backward += U + M * unfused + 2 * V + x
        return forward, backward

    def _compute_U(self):
        """U laid out (α², K, C) for the GEMMs (C-contiguous, kept per layer for backward)."""
        a = self.alpha
        data = self.params[0].data
        K, C = data.shape[:2]
        if self._U is None or self._U.shape != (a * a, K, C):
            self._U = np.empty((a * a, K, C), self.dtype)
        U2 = self._U.reshape(a * a, K * C)
        if self.weights_mode == "winograd":
            np.copyto(U2, data.reshape(K * C, a * a).T)                          # U = Q
        else:
            np.matmul(self._GG, data.reshape(K * C, -1).T, out=U2)               # U = G W Gᵀ
            if self.weights_mode == "spatial_masked":                            # ⊙ mask, Liu & Turakhia, eq. 2
                U2 *= self.buffers["winograd_mask"].reshape(K * C, a * a).T
        return self._U

    def forward(self, bottoms, tops):
        a = self.alpha
        K = self.params[0].shape[0]
        x = np.ascontiguousarray(bottoms[0].data, dtype=self.dtype)
        U = self._compute_U()
        gather_transform(x, self._BT, self.m, self.pad, self.th, self.tw, self.V, self.winograd_relu)
        bias = self.params[1].data if len(self.params) > 1 else None
        if self.quant is not None:                                               # integer products
            M = self.workspace("M", (a * a, K, self.NT), self.dtype)
            training = self.phase == TRAIN
            self.quant.products(U, self.V, M, training=training)
            if training:                        # the straight-through estimator's backward operands
                U_hat, V_hat = self.quant.dequantized()
                self._U[...] = U_hat
                self.V[...] = V_hat
            transform_scatter(M, self._A, self.m, 0, self.th, self.tw, tops[0].data, bias)
            return
        if self.V.shape[1] <= FUSED_MAX_C:                                        # Y = Aᵀ (U ⊙ V) A + b
            product_transform_scatter(U, self.V, self._A, self.m, 0, self.th, self.tw, tops[0].data, bias)
            return
        M = self.workspace("M", (a * a, K, self.NT), self.dtype)
        pattern = self._winograd_pattern()
        self._sparse_pass = self.sparse.decide(pattern)
        if self._sparse_pass:                                                     # skip masked products
            self.sparse.forward(U, pattern, self.V, M)
        else:
            batched_matmul(U, self.V, M)
        transform_scatter(M, self._A, self.m, 0, self.th, self.tw, tops[0].data, bias)

    def backward(self, tops, propagate_down, bottoms):
        a = self.alpha
        K, C = self.params[0].shape[:2]
        dy = np.ascontiguousarray(tops[0].diff, dtype=self.dtype)
        dU = self.workspace("dU", (a * a, K, C), self.dtype)
        fused = C <= FUSED_MAX_C
        if fused:                                  # dU = dM Vᵀ [and dV = Uᵀ dM], dM = A dY Aᵀ per item
            dV = self.workspace("dV", (a * a, C, self.NT), self.dtype) if propagate_down[0] else None
            gather_transform_grads(dy, self._A, self.m, 0, self.th, self.tw, self.V, self._U, dU, dV)
        else:
            dM = self.workspace("M", (a * a, K, self.NT), self.dtype)
            gather_transform(dy, self._A, self.m, 0, self.th, self.tw, dM)      # dM = A dY Aᵀ
            if self._sparse_pass:              # dU at the unmasked entries only, dV = Uᵀ dM sparse
                dV = self.workspace("dV", (a * a, C, self.NT), self.dtype) if propagate_down[0] else None
                self.sparse.backward(dM, self.V, dU, dV)
            else:
                batched_matmul(dM, self.V, dU, trans_b=True)                      # dU = dM Vᵀ
        ste = self.quant is not None and self.quant.has_training_state
        dU2 = dU.reshape(a * a, K * C)                                           # dL/dU, (α², K·C)
        w = self.params[0]
        if self.weights_mode == "winograd":
            np.copyto(w.diff.reshape(K * C, a * a), dU2.T)                        # dL/dQ = dL/dU
        else:
            if self.weights_mode == "spatial_masked":
                np.multiply(dU2, self.buffers["winograd_mask"].reshape(K * C, a * a).T, out=dU2)  # dU ⊙ mask
            np.matmul(dU2.T, self._GG, out=w.diff.reshape(K * C, -1))             # dW = Gᵀ dU G
        if len(self.params) > 1:
            self.params[1].diff[...] = dy.sum(axis=(0, 2, 3))
        if propagate_down[0]:
            if not fused and not self._sparse_pass:
                dV = self.workspace("dV", (a * a, C, self.NT), self.dtype)
                batched_matmul(self._U, dM, dV, trans_a=True)                     # dV = Uᵀ dM
            if ste:                                   # no gradient where the quantizer clipped V
                dV *= self.quant.ste_mask()
            if self.winograd_relu:                                                # ReLU(V)'s gradient
                if ste:                                  # V > 0 before quantization, not V̂ > 0
                    pos = self.quant.input_positive()
                else:
                    pos = self.workspace("pos", self.V.shape, np.bool_)
                    np.greater(self.V, 0, out=pos)
                np.multiply(dV, pos, out=dV)
            transform_scatter(dV, self._BT, self.m, self.pad, self.th, self.tw, bottoms[0].diff)
