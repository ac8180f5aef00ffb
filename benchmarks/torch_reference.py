"""PyTorch conv2d as the optional comparison in the benchmarks (never imported by wincaffe)."""


def conv2d_closures(x, w, b, pad, need_dx=True):
    """``(forward, forward_backward)`` closures of ``torch.nn.functional.conv2d`` on the
    NumPy arrays x (N, C, H, W), w (K, C, r, r), b (K,), or None without PyTorch.
    forward_backward back-propagates ones; the input gradient only with ``need_dx``."""
    try:
        import torch
    except Exception:
        return None
    tx = torch.from_numpy(x).requires_grad_(need_dx)
    tw, tb = torch.from_numpy(w).requires_grad_(True), torch.from_numpy(b).requires_grad_(True)

    def forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, tb, padding=pad)

    def forward_backward():
        y = torch.nn.functional.conv2d(tx, tw, tb, padding=pad)
        y.backward(torch.ones_like(y))
    return forward, forward_backward
