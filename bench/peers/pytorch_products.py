#!/usr/bin/env python3
"""PyTorch's side of `mnist-gpu bench --products`: the three products of a layer of
`units` x `inputs` on `n` samples, as nn.Linear's forward and backward run them (float32,
CPU): forward `addmm(b, X, Wᵀ)` (n x inputs times inputs x units), `dW = dYᵀ·X`, `dX = dY·W`.
Each is timed as ours is: the best of short runs (a few ms each) over about `--seconds`, so
that other programs on a shared machine weigh little. Prints GFLOP/s (2 per multiply-add).

    python3 pytorch_products.py --hidden 1600 --samples 64 --threads 2 --json
"""

import argparse
import json
import os
import time

import torch


def best_of(seconds, f):
    f()
    start = time.perf_counter()
    f()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(2e-3 / once))
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t = time.perf_counter()
        for _ in range(calls):
            f()
        best = min(best, (time.perf_counter() - t) / calls)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="1600", help="hidden widths, comma-separated (784-H-10)")
    p.add_argument("--samples", type=int, default=64, help="samples per product (a block)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=0.3, help="timing per product")
    p.add_argument("--json", action="store_true", help="print a JSON array as the last line")
    args = p.parse_args()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(1)
    widths = [784] + [int(h) for h in args.hidden.split(",")] + [10]
    n = args.samples
    rows = []
    print(f"pytorch {torch.__version__}, {args.threads} threads, {n} samples")
    for inputs, units in zip(widths, widths[1:]):
        w, b = torch.randn(units, inputs), torch.randn(units)
        x, dy = torch.randn(n, inputs), torch.randn(n, units)
        flops = 2.0 * units * inputs * n / 1e9
        timed = {
            "forward": best_of(args.seconds, lambda: torch.addmm(b, x, w.t())),
            "input_grad": best_of(args.seconds, lambda: dy.mm(w)),
            "weight_grad": best_of(args.seconds, lambda: dy.t().mm(x)),
        }
        for name, seconds in timed.items():
            print(f"{units:>5}x{inputs:<5} {name:<11} {flops / seconds:8.1f} GFLOP/s")
            rows.append({"units": units, "inputs": inputs, "samples": n, "product": name,
                         "threads": args.threads, "gflops": flops / seconds})
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
