"""Print the float error of Winograd F(m, r) against direct float64 correlation.

    python benchmarks/winograd_error_table.py [--dtype float32] [--tiles 2000] [--channels 1 16]

For each (m, r) (default: F(2,3), F(4,3), F(6,3), F(2,5), F(4,5)) random α×α
tiles and r×r filters, uniform on [−1, 1], are pushed through
Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A entirely in the given dtype (channels are summed in the
transform domain, as in a conv layer) and compared with the direct correlation
in float64. The last columns show a direct correlation in the same dtype (the
floor) and the ratio.
"""
import argparse

import numpy as np

from wincaffe.transforms.winograd import SEED_ERROR_CASES, error_table, format_error_table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    ap.add_argument("--tiles", type=int, default=2000)
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--cases", nargs="+", default=None, help="e.g. 2,3 4,3 8,3")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cases = SEED_ERROR_CASES if a.cases is None else [tuple(int(v) for v in c.split(",")) for c in a.cases]
    for c in a.channels:
        print(f"\n{a.dtype}, {a.tiles} tiles, {c} channel(s) summed per output, inputs and filters U(-1, 1)")
        print(format_error_table(error_table(cases, dtype=a.dtype, tiles=a.tiles, channels=c, seed=a.seed),
                                 dtype=a.dtype))


if __name__ == "__main__":
    main()
