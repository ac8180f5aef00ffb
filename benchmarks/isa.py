"""``--isa avx2``: run a benchmark on an AVX-512 CPU as if it had AVX2 only.

No AVX2-only machine was at hand, so the benchmarks can restrict every library's runtime
CPU dispatch to AVX2 + FMA instead. The environment below is set and the benchmark
re-executes itself, because each library reads its variable once, at load time:

    GLIBC_TUNABLES            glibc's ifuncs (memcpy, memset) without AVX-512
    NPY_DISABLE_CPU_FEATURES  NumPy's own SIMD loops without x86-64-v4 (AVX-512)
    OPENBLAS_CORETYPE         OpenBLAS's Haswell (AVX2) kernels instead of SkylakeX
    WINCAFFE_SPARSE_PATH      wincaffe's sparse products: the AVX2 build
    WINCAFFE_QUANT_PATH       wincaffe's integer Winograd products: the AVX2 build
    WINCAFFE_POOL_PATH        wincaffe's pooling: the AVX2 build (already its widest)
    ATEN_CPU_CAPABILITY       PyTorch's ATen kernels: AVX2
    ONEDNN_MAX_CPU_ISA        PyTorch's oneDNN convolutions: AVX2
    MKL_ENABLE_INSTRUCTIONS   MKL (PyTorch's matrix products, e.g. its Linear layers): AVX2

What this does not emulate: the caches, memory and clock stay those of the AVX-512
machine; FFTW (the FFT layers) picks its codelets itself, and so does PyTorch's fbgemm
(its int8 convolutions, in bench_quant.py), which reads no such variable. The figures are an
estimate of an AVX2-only CPU of this generation, not a measurement on one.
Standard library only: it runs before NumPy is imported.
"""
import os
import sys

AVX2_ENV = {
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
    "WINCAFFE_SPARSE_PATH": "avx2",
    "WINCAFFE_QUANT_PATH": "avx2",
    "WINCAFFE_POOL_PATH": "avx2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
CHOICES = ("native", "avx2")
_MARK = "WINCAFFE_BENCH_ISA"


def add_argument(parser):
    parser.add_argument("--isa", choices=CHOICES, default="native",
                        help="avx2: restrict every library's CPU dispatch to AVX2 (an emulated "
                             "AVX2-only CPU; see benchmarks/isa.py)")


def apply(isa, argv=None):
    """Re-execute this process (same interpreter flags and arguments) with the restricted
    environment, once; no-op for native. Call before NumPy or any BLAS is imported, from a
    script's command line only: ``argv`` given (a caller's own argument list) is an error,
    because the re-executed process would not see it."""
    if isa == "native" or os.environ.get(_MARK) == isa:
        return
    if argv is not None:
        raise ValueError("--isa avx2 re-executes the script; run it from the command line")
    env = dict(os.environ, **AVX2_ENV, **{_MARK: isa})
    if os.environ.get("GLIBC_TUNABLES"):                   # keep the user's other tunables
        env["GLIBC_TUNABLES"] = os.environ["GLIBC_TUNABLES"] + ":" + AVX2_ENV["GLIBC_TUNABLES"]
    os.execve(sys.executable, sys.orig_argv, env)


def describe():
    """One line: whether the run is restricted, naming each variable as it is set now (one
    missing or changed shows up as such)."""
    isa = os.environ.get(_MARK)
    if not isa:
        return "ISA: native (every library chose its widest SIMD)"
    state = []
    for key, want in AVX2_ENV.items():
        have = os.environ.get(key)
        state.append(f"{key}={have}" if have is not None and want in have else f"{key} NOT SET (wanted {want})")
    return ("ISA: restricted to AVX2 on this CPU, whose own SIMD level is printed above ("
            + ", ".join(state) + "); caches and clock are this machine's; FFTW and PyTorch's fbgemm not restricted")
