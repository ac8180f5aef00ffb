"""Liu et al. §4's multiply table on LeNet-5-3x3 (MNIST): the same four rows they give
for VGG-nagadomi on CIFAR-10, counted by `wincaffe mults` on trained weights.

    dense (a)                                   direct
    (a) pruned, sparse activations              direct_sparse
    Winograd F(2,3), dense weights (b)          winograd
    (c) pruned in the Winograd domain, with
        the Winograd-ReLU                       winograd_sparse

python benchmarks/table_liu_et_al.py --a-dense A.npz --a-pruned A_PRUNED.npz \\
    --b-dense B.npz --c-pruned C_PRUNED.npz [--batches 10]

Counts are per forward pass of one image, the whole net (the FC layers as their
direct_sparse products); sparse counts are measured on the first --batches TEST
batches. The transforms are printed apart (Liu et al. leave them out).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
NETS = os.path.join(os.path.dirname(HERE), "nets")

# Liu et al. §4, VGG-nagadomi on CIFAR-10
THEIRS = {"dense": 2.3e8, "pruned": 5.0e7, "winograd": 1.1e8, "winograd_pruned": 2.3e7}


def count(net, weights, batches):
    from wincaffe.counting import mults_report
    from wincaffe.layer import TEST
    from wincaffe.net import Net
    from wincaffe.snapshot import load_weights
    n = Net(os.path.join(NETS, net), TEST)
    load_weights(n, weights, strict=True)
    return mults_report(n, batches)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a-dense", required=True, help="weights of nets/lenet5_3x3.yaml, dense")
    p.add_argument("--a-pruned", required=True, help="weights of nets/lenet5_3x3.yaml, pruned")
    p.add_argument("--b-dense", required=True, help="weights of nets/lenet5_3x3_winograd_f2.yaml, dense")
    p.add_argument("--c-pruned", required=True, help="weights of nets/lenet5_3x3_winograd_relu.yaml, pruned")
    p.add_argument("--batches", type=int, default=10, help="TEST batches for the sparse counts (default 10)")
    args = p.parse_args(argv)
    from wincaffe.threads import set_num_threads
    set_num_threads(1)
    a = count("lenet5_3x3.yaml", args.a_dense, args.batches)["total"]
    ap = count("lenet5_3x3.yaml", args.a_pruned, args.batches)
    b = count("lenet5_3x3_winograd_f2.yaml", args.b_dense, 0)["total"]
    cp = count("lenet5_3x3_winograd_relu.yaml", args.c_pruned, args.batches)
    dense = a["direct"]
    rows = [("dense (a): direct", dense, THEIRS["dense"], None),
            ("(a) pruned, sparse activations: direct_sparse", ap["total"]["direct_sparse"], THEIRS["pruned"], None),
            ("Winograd F(2,3), dense weights (b): winograd", b["winograd"], THEIRS["winograd"], b["transforms"]),
            ("(c) pruned in the Winograd domain + Winograd-ReLU: winograd_sparse",
             cp["total"]["winograd_sparse"], THEIRS["winograd_pruned"], cp["total"]["transforms"])]
    print("| multiplies per image (LeNet-5-3x3, MNIST) | ours | reduction | Liu et al. (VGG-nagadomi) | "
          "their reduction | transforms (apart) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, ours, theirs, transforms in rows:
        print(f"| {label} | {ours:,} | {dense / ours:.1f}x | {theirs:.1e} | {THEIRS['dense'] / theirs:.1f}x | "
              f"{'' if transforms is None else f'{transforms:,}'} |")
    print()
    for name, rep in (("(a) pruned", ap), ("(c) pruned", cp)):
        dens = ", ".join(f"{l['name']} {l['weight_density']:.1%} w / {l.get('activation_density', 1):.1%} act"
                         for l in rep["layers"])
        print(f"{name}: {dens}")
    print(f"sparse counts on {cp['images']} TEST images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
