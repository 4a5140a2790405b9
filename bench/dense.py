"""Dense kernel benchmark: zeroskip gelu / softmax / gemv / packed GEMM / GEMM convs / depthwise conv /
pooling / small convs (dense weight through the CSR kernel) against torch (and numpy for gemv and GEMM).

    python bench/dense.py                 # full run (about two minutes on 2 cores)
    python bench/dense.py --quick         # fewer rounds
    python bench/dense.py --only dwconv   # cases whose label contains "dwconv"

For each case, zeroskip and torch are timed in the same process, interleaved round by round, so
machine noise hits them alike; each time is the median over rounds, in microseconds, outputs
preallocated. numpy (OpenBLAS, whose pool busy-waits after each call) is timed on its own after
them. Threads: 1, then 2 (zeroskip's and torch's OpenMP pools, OpenBLAS's own), set per section.
"ratio" is torch time / zeroskip time (> 1: zeroskip faster). Last, the per-call overhead of the
bindings on tiny inputs. Depthwise cases: the MobileNet-v2 3x3 depthwise layers at batch 1 (pad 1,
stride s1/s2, fused ReLU6), against torch F.conv2d(groups=C) (which allocates its output).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time
import timeit
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from zeroskip import _C, dense, kernels
from zeroskip.formats import CSR


def _openblas_set_threads(n: int) -> bool:
    """Sets numpy's OpenBLAS thread count through the loaded library (best effort)."""
    try:
        with open("/proc/self/maps") as f:
            path = next(p for p in (ln.split()[-1] for ln in f) if "openblas" in os.path.basename(p))
        lib = ctypes.CDLL(path)
    except (OSError, StopIteration, IndexError):
        return False
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("64_", "_", ""):
            fn = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return True
    return False


def measure(fns: dict[str, Callable[[], Any]], budget: float, min_rounds: int = 5) -> dict[str, float]:
    """Median microseconds per call of each fn, interleaved round by round within `budget` seconds."""
    for f in fns.values():  # warm up
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    t_end = time.perf_counter() + budget
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() < t_end and rounds < 20000):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    return {k: float(np.median(v)) * 1e6 for k, v in times.items()}


def cases(
    rng: np.random.Generator,
) -> list[tuple[str, dict[str, Callable[[], Any]], Callable[[], Any] | None]]:
    """(label, {engine: fn}, numpy fn or None); zeroskip first, torch second."""
    out = []
    for n in (4096, 65536, 1 << 20):
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        y = np.empty_like(x)
        xt, yt = torch.from_numpy(x), torch.from_numpy(np.empty_like(x))
        for approx in ("none", "tanh"):
            out.append(
                (
                    f"gelu[{approx}] n={n}",
                    {
                        "zeroskip": lambda x=x, y=y, a=approx: _C.gelu(x, y, a),
                        "torch": lambda xt=xt, yt=yt, a=approx: torch._C._nn.gelu(xt, approximate=a, out=yt),
                    },
                    None,
                )
            )
    for shape in ((1, 4, 128, 128), (8, 12, 128, 128), (64, 1000)):
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        y = np.empty_like(x)
        xt, yt = torch.from_numpy(x), torch.from_numpy(np.empty_like(x))
        out.append(
            (
                f"softmax {shape}",
                {
                    "zeroskip": lambda x=x, y=y: _C.softmax(x, y),
                    "torch": lambda xt=xt, yt=yt: torch.softmax(xt, -1, out=yt),
                },
                None,
            )
        )
    for n, k in ((512, 256), (512, 512), (1536, 384), (384, 1536), (4096, 4096)):
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        for m in (1, 4):
            x = rng.standard_normal((m, k)).astype(np.float32)
            xv = x[0] if m == 1 else x
            y = np.empty((n,) if m == 1 else (m, n), np.float32)
            wt, bt, xt = torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(x)
            yt = torch.empty((m, n))
            yn = np.empty((m, n), np.float32)
            out.append(
                (
                    f"gemv {n}x{k} +bias m={m}",
                    {
                        "zeroskip": lambda w=w, xv=xv, b=b, y=y: _C.gemv(w, xv, b, y),
                        "torch": lambda wt=wt, xt=xt, bt=bt, yt=yt: torch.addmm(bt, xt, wt.t(), out=yt),
                    },
                    lambda w=w, x=x, b=b, yn=yn: np.add(np.matmul(x, w.T, out=yn), b, out=yn),
                )
            )
    # The packed GEMM at transformer and MLP shapes (rows = batch x sequence), bias fused.
    for m, n, k in (
        (128, 128, 128),
        (128, 384, 384),
        (128, 1536, 384),
        (128, 384, 1536),
        (8, 2048, 2048),
        (64, 2048, 2048),
        (1024, 512, 128),
    ):
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        pw = dense.pack_linear(w, b)
        x = rng.standard_normal((m, k)).astype(np.float32)
        y = np.empty((m, n), np.float32)
        wt, bt, xt = torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(x)
        yt = torch.empty((m, n))
        yn = np.empty((m, n), np.float32)
        out.append(
            (
                f"gemm {m}x{n}x{k} +bias",
                {
                    "zeroskip": lambda pw=pw, x=x, y=y: _C.gemm(pw, x, y, -np.inf, np.inf, ""),
                    "torch": lambda wt=wt, xt=xt, bt=bt, yt=yt: torch.addmm(bt, xt, wt.t(), out=yt),
                },
                lambda w=w, x=x, b=b, yn=yn: np.add(np.matmul(x, w.T, out=yn), b, out=yn),
            )
        )
    # Four 2048 x 2048 layers in turn (64 MB of weights, more than the caches hold: streamed from
    # memory each call, as in an MLP of that size).
    for m in (1, 8):
        ws = [(rng.standard_normal((2048, 2048)) / 45).astype(np.float32) for _ in range(4)]
        pws = [dense.pack_linear(w) for w in ws]
        wts = [torch.from_numpy(w) for w in ws]
        xs = [rng.standard_normal((m, 2048)).astype(np.float32) for _ in range(4)]
        ys = [np.empty((m, 2048), np.float32) for _ in range(4)]
        xts, yts = [torch.from_numpy(x) for x in xs], [torch.from_numpy(y) for y in ys]

        def zs_layers(pws=pws, xs=xs, ys=ys):
            for pw, x, y in zip(pws, xs, ys):
                _C.gemm(pw, x, y, -np.inf, np.inf, "")

        def torch_layers(wts=wts, xts=xts, yts=yts):
            for wt, xt, yt in zip(wts, xts, yts):
                torch.mm(xt, wt.t(), out=yt)

        out.append((f"gemm {m}x2048x2048 x4 (64 MB)", {"zeroskip": zs_layers, "torch": torch_layers}, None))
    # Dense NCHW convs through the weight-left GEMM (1x1 directly, k x k through im2col), bias fused,
    # Small-CNN (batch 1 and 8), MobileNet-v2 pointwise and ResNet-18 shapes.
    for c, co, hw, k, n in (
        (3, 16, 32, 3, 1),
        (3, 16, 32, 3, 8),
        (16, 32, 8, 3, 1),
        (16, 32, 8, 3, 8),
        (16, 16, 16, 1, 8),
        (32, 16, 112, 1, 1),
        (144, 24, 56, 1, 1),
        (576, 96, 14, 1, 1),
        (960, 320, 7, 1, 1),
        (320, 1280, 7, 1, 1),
        (960, 320, 7, 1, 8),
        (64, 64, 56, 3, 1),
        (128, 128, 28, 3, 1),
        (256, 256, 14, 3, 1),
    ):
        w = (rng.standard_normal((co, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
        b = rng.standard_normal(co).astype(np.float32)
        pw = dense.pack_conv(w, b)
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        y = np.empty((n, co, hw, hw), np.float32)
        wt, bt, xt = torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(x)
        p = k // 2
        out.append(
            (
                f"conv {c}->{co} {hw}x{hw} k{k} b{n}",
                {
                    "zeroskip": lambda pw=pw, x=x, y=y, k=k, p=p: _C.conv2d_dense(
                        pw, x, y, -np.inf, np.inf, [k, k], [1, 1], [p] * 4, [1, 1]
                    ),
                    "torch": lambda wt=wt, xt=xt, bt=bt, p=p: F.conv2d(xt, wt, bt, 1, p),
                },
                None,
            )
        )
    # 1x1 convs on small maps through the Linear packing (output channels in the vectors), the
    # candidate the planner offers beside the weight-left GEMM for maps up to 14x14.
    for c, co, hw, n in ((576, 96, 14, 1), (960, 320, 7, 1), (320, 1280, 7, 1), (960, 320, 7, 8)):
        w = (rng.standard_normal((co, c)) / np.sqrt(c)).astype(np.float32)
        b = rng.standard_normal(co).astype(np.float32)
        pl = dense.pack_linear(w, b)
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        y = np.empty((n, co, hw, hw), np.float32)
        wt, bt, xt = torch.from_numpy(w.reshape(co, c, 1, 1)), torch.from_numpy(b), torch.from_numpy(x)
        out.append(
            (
                f"conv-cv {c}->{co} {hw}x{hw} k1 b{n}",
                {
                    "zeroskip": lambda pl=pl, x=x, y=y: _C.conv2d_dense(
                        pl, x, y, -np.inf, np.inf, [1, 1], [1, 1], [0] * 4, [1, 1]
                    ),
                    "torch": lambda wt=wt, xt=xt, bt=bt: F.conv2d(xt, wt, bt),
                },
                None,
            )
        )
    mbv2 = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (192, 28, 2)]
    mbv2 += [(384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1), (16, 16, 1)]
    for c, hw, s in mbv2:
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        w = (rng.standard_normal((c, 1, 3, 3)) / 3).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        o = (hw + 2 - 3) // s + 1
        y = np.empty((1, c, o, o), np.float32)
        xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        out.append(
            (
                f"dwconv 3x3 s{s} (1,{c},{hw},{hw})",
                {
                    "zeroskip": lambda x=x, w=w, b=b, y=y, s=s: _C.dwconv(
                        x, w, b, y, (s, s), (1, 1, 1, 1), (1, 1), 0.0, 6.0
                    ),
                    "torch": lambda xt=xt, wt=wt, bt=bt, s=s, c=c: F.relu6(
                        F.conv2d(xt, wt, bt, stride=s, padding=1, groups=c), inplace=True
                    ),
                },
                None,
            )
        )
    # Pooling (ResNet's 3x3/2 max pool, the small CNN's 2x2 pools, MobileNet's global average).
    pools = [
        ("max", 64, 112, 3, 2, 1),
        ("max", 16, 32, 2, 2, 0),
        ("avg", 16, 16, 2, 2, 0),
        ("avg", 1280, 7, 7, 1, 0),
    ]
    for kind, c, hw, k, s, p in pools:
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        o = (hw + 2 * p - k) // s + 1
        y = np.empty((1, c, o, o), np.float32)
        xt = torch.from_numpy(x)
        tfn = F.max_pool2d if kind == "max" else F.avg_pool2d
        out.append(
            (
                f"pool {kind} {k}x{k} s{s} (1,{c},{hw},{hw})",
                {
                    "zeroskip": lambda x=x, y=y, kind=kind, k=k, s=s, p=p: _C.pool2d(
                        x, y, kind, (k, k), (s, s), (p, p, p, p), (1, 1)
                    ),
                    "torch": lambda xt=xt, tfn=tfn, k=k, s=s, p=p: tfn(xt, k, s, p),
                },
                None,
            )
        )
    # Small group-1 convs with a dense weight through the CSR kernel on the im2col (the plan's
    # "dense/csr-im2col" candidate): the small CNN's three, against torch F.conv2d.
    for cin, cout, hw, k in [(3, 16, 32, 3), (16, 16, 16, 1), (16, 32, 8, 3)]:
        x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
        b = rng.standard_normal(cout).astype(np.float32)
        packed = kernels.pack(CSR.from_dense(w.reshape(cout, -1)))
        y = np.empty((1, cout, hw, hw), np.float32)
        xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
        p = k // 2
        out.append(
            (
                f"conv {cin}->{cout} {k}x{k} dense weight as CSR (1,{cin},{hw},{hw})",
                {
                    "zeroskip": lambda packed=packed, x=x, y=y, b=b, k=k, p=p: _C.spmm_conv(
                        packed, x, y, b, 0.0, np.inf, None, (k, k), (1, 1), (p, p, p, p), (1, 1)
                    ),
                    "torch": lambda xt=xt, wt=wt, bt=bt, p=p: F.relu(F.conv2d(xt, wt, bt, padding=p)),
                },
                None,
            )
        )
    return out


def overhead() -> None:
    """Per-call cost of the bindings on tiny inputs (the kernels' own work is a few ns)."""
    x = np.ones(1, np.float32)
    y = np.empty_like(x)
    w = np.ones((1, 1), np.float32)
    t, to = torch.ones(1), torch.empty(1)
    tw = torch.ones(1, 1)

    def noop(a: Any, b: Any) -> None:
        return None

    fns = {
        "python no-op call f(x, y)": lambda: noop(x, y),
        "_C.gelu(x, out, 'none'), n=1": lambda: _C.gelu(x, y, "none"),
        "_C.softmax(x, out), n=1": lambda: _C.softmax(x, y),
        "_C.gemv(w, x, None, out), 1x1": lambda: _C.gemv(w, x, None, y),
        "dense.gelu(x, out), n=1": lambda: dense.gelu(x, y),
        "dense.gemv(w, x, out=out), 1x1": lambda: dense.gemv(w, x, out=y),
        "_C.gelu(t.numpy(), o.numpy()) from torch": lambda: _C.gelu(t.numpy(), to.numpy(), "none"),
        "_C.gemv(tw.numpy(), t.numpy(), None, o.numpy())": lambda: _C.gemv(
            tw.numpy(), t.numpy(), None, to.numpy()
        ),
        "torch F.gelu(t), n=1": lambda: F.gelu(t),
        "torch F.linear(t, tw), 1x1": lambda: F.linear(t, tw),
    }
    print("\nper-call cost on tiny inputs (best of 5 loops of 5000 calls, µs per call, incl. the lambda):")
    for k, f in fns.items():
        best = min(timeit.repeat(f, number=5000, repeat=5)) / 5000 * 1e6
        print(f"  {k:50s} {best:7.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter time budget per case")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--only", default="", help="run only the cases whose label contains this")
    args = ap.parse_args()
    budget = 0.15 if args.quick else 0.5
    rng = np.random.default_rng(0)
    all_cases = [c for c in cases(rng) if args.only in c[0]]
    default = next(d["isa"] for d in dense.isas() if d["default"])
    versions = f"torch {torch.__version__}  numpy {np.__version__}  cpus={os.cpu_count()}"
    print(f"zeroskip dense isa={default}  {versions}")
    for nt in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(nt)
        kernels.set_num_threads(nt)
        blas = _openblas_set_threads(nt)
        print(f"\n== threads={nt} (numpy OpenBLAS threads {'set' if blas else 'unchanged'}) ==")
        print(f"{'case':34s} {'zeroskip':>9s} {'torch':>9s} {'ratio':>6s} {'numpy':>9s} {'ratio':>6s}")
        for label, fns, np_fn in all_cases:
            big = "4096x4096" in label or "1048576" in label or "(8, 12" in label
            res = measure(fns, budget * (2 if big else 1), min_rounds=10)
            zs, tt = res["zeroskip"], res["torch"]
            line = f"{label:34s} {zs:9.1f} {tt:9.1f} {tt / zs:6.2f}"
            if np_fn is not None:
                nres = measure({"numpy": np_fn}, budget / 2, min_rounds=10)["numpy"]
                line += f" {nres:9.1f} {nres / zs:6.2f}"
            print(line, flush=True)
    torch.set_num_threads(1)
    kernels.set_num_threads(1)
    if not args.only:
        overhead()


if __name__ == "__main__":
    main()
