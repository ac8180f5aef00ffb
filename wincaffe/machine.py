"""What a benchmark ran on: the CPU, its SIMD level, the BLAS library and the kernel it
chose, the thread pools. Benchmarks print :func:`describe` first, because timings mean
nothing without it (and because ``OPENBLAS_CORETYPE`` can force a slower kernel)."""
import os
import platform


def cpu_flags():
    """The CPU's feature flags (Linux: /proc/cpuinfo), as a set; empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_level(flags=None):
    """The widest vector level of this CPU: avx512 (+vnni), avx2, or baseline."""
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return "AVX-512" + (" with VNNI" if "avx512_vnni" in flags else "")
    if "avx2" in flags and "fma" in flags:
        return "AVX2" + (" with AVX-VNNI" if "avx_vnni" in flags else "")
    return "baseline (no AVX2)"


def describe():
    """A few lines: CPU and SIMD, cores, BLAS libraries with their kernel and threads,
    the OpenBLAS environment overrides."""
    lines = [f"CPU: {cpu_name()}; SIMD: {simd_level()}; cores: {os.cpu_count()}"]
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            arch = p.get("architecture") or "-"
            lines.append(f"thread pool: {p.get('internal_api')} {p.get('version') or ''} kernel={arch} "
                         f"threads={p.get('num_threads')} ({os.path.basename(p.get('filepath', ''))})")
    except Exception as exc:          # threadpoolctl missing or confused: say so, do not fail
        lines.append(f"thread pools: unknown ({type(exc).__name__})")
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS") if k in os.environ}
    lines.append("environment: " + (", ".join(f"{k}={v}" for k, v in env.items()) or
                                    "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"))
    return "\n".join(lines)
