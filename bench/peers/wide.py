#!/usr/bin/env python3
"""One command for the wide-layer comparison (bench/NOTES.md, "Wide layers on the CPU"):
our CPU backend against PyTorch (CPU, the same threads) on 784-H-10 networks, at batch 64
with Adam and at full batch with SGD, the runs of each row alternated (ours, PyTorch,
PyTorch, ours, ...) over several rounds, medians; then each layer's products on their own
(`mnist-gpu bench --products` against `pytorch_products.py`), alternated the same way; the
load average beside every table.

    python3 bench/peers/wide.py                      # builds, then about 6 minutes
    python3 bench/peers/wide.py --rounds 5 --hidden 128,1600 --threads 2

Needs `pip install numpy torch`. Run it on a quiet machine: other work on the cores moves
PyTorch's numbers most (its threads wait on each other at every barrier).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.join(ROOT, "target", "release", "mnist-gpu")


THREADS = {}


def last_json(command):
    env = dict(os.environ, **THREADS)
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def load():
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def ours_rate(hidden, batch, optimizer, samples):
    rows = last_json([BIN, "bench", "--backend", "cpu", "--hidden", str(hidden),
                      "--batch-sizes", batch, "--samples", str(samples),
                      "--optimizer", optimizer, "--json"])
    return rows[0]["samples_per_second"]


def torch_rate(hidden, batch, optimizer, samples, threads):
    rows = last_json([sys.executable, os.path.join(HERE, "pytorch_cpu.py"), "--hidden",
                      str(hidden), "--batch-sizes", batch, "--samples", str(samples),
                      "--optimizer", optimizer, "--threads", str(threads), "--json"])
    return rows[0]["samples_per_second"]


def steps_table(args):
    modes = [("64", "adam"), ("full", "sgd")]
    rates = {}
    for r in range(args.rounds):
        for hidden in args.hidden:
            for batch, optimizer in modes:
                key = (hidden, batch)
                ours = lambda: ours_rate(hidden, batch, optimizer, args.samples)  # noqa: E731
                torch = lambda: torch_rate(hidden, batch, optimizer, args.samples,  # noqa: E731
                                           args.threads)
                first, second = (ours, torch) if r % 2 == 0 else (torch, ours)
                a, b = first(), second()
                o, t = (a, b) if r % 2 == 0 else (b, a)
                rates.setdefault(key, ([], []))
                rates[key][0].append(o)
                rates[key][1].append(t)
                print(f"  round {r + 1}: 784-{hidden}-10 batch {batch}: ours {o:,.0f}, "
                      f"pytorch {t:,.0f} samples/s", file=sys.stderr)
    print(f"\nTraining steps, samples/s, median of {args.rounds} alternated rounds "
          f"({args.samples} synthetic samples; {load()})\n")
    print("| network, mode | PyTorch | ours | ours ÷ PyTorch |")
    print("| --- | ---: | ---: | ---: |")
    for hidden in args.hidden:
        for batch, optimizer in modes:
            o, t = (statistics.median(v) for v in rates[(hidden, batch)])
            mode = f"batch {batch}, Adam" if batch == "64" else "full batch, SGD"
            print(f"| 784-{hidden}-10, {mode} | {t:,.0f} | {o:,.0f} | {o / t:.2f}× |")


def products_table(args):
    widths = [h for h in args.hidden if h >= 32]
    if not widths:
        return

    def ours():
        return [row for h in widths for row in last_json(
            [BIN, "bench", "--products", "--hidden", str(h), "--batch-sizes", "64", "--json"])]

    def torch():
        return [row for h in widths for row in last_json(
            [sys.executable, os.path.join(HERE, "pytorch_products.py"), "--hidden", str(h),
             "--samples", "64", "--threads", "1", "--json"])]

    ours_runs, torch_runs = [], []
    for r in range(args.rounds):
        if r % 2 == 0:
            ours_runs.append(ours())
            torch_runs.append(torch())
        else:
            torch_runs.append(torch())
            ours_runs.append(ours())
    peak = statistics.median(run[0]["peak_gflops"][0] for run in ours_runs)
    print(f"\nProducts on one thread, 64 samples, GFLOP/s, median of {args.rounds} alternated "
          f"rounds; FP32 peak of one core (multiply-add chains): {peak:.1f} GFLOP/s ({load()})\n")
    print("| layer | product | PyTorch | ours | ours ÷ PyTorch | ours ÷ peak |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for i, row in enumerate(ours_runs[0]):
        o = statistics.median(run[i]["gflops"][0] for run in ours_runs)
        t = statistics.median(run[i]["gflops"] for run in torch_runs)
        layer = f"{row['units']}×{row['inputs']}"
        print(f"| {layer} | {row['product']} | {t:.1f} | {o:.1f} | {o / t:.2f}× | "
              f"{100 * o / peak:.0f}% |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="10,128,512,800,1600",
                   help="hidden widths of the 784-H-10 networks, comma-separated")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds (medians)")
    p.add_argument("--samples", type=int, default=10000, help="synthetic samples (full batch)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for both (ours through RAYON_NUM_THREADS); 1 is the view "
                        "least moved by other work on a shared machine")
    p.add_argument("--no-build", action="store_true", help="use target/release as it is")
    args = p.parse_args()
    args.hidden = [int(h) for h in args.hidden.split(",")]
    THREADS["RAYON_NUM_THREADS"] = str(args.threads)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    print(f"mnist-gpu vs PyTorch, wide layers, {args.threads} threads each; {load()}")
    steps_table(args)
    products_table(args)
    print(f"\n({load()} at the end)")


if __name__ == "__main__":
    main()
