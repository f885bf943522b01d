#!/usr/bin/env python3
"""The whole GPU table in one command (issue 22), for a GPU hour measured in minutes.

    python3 bench/gpu_table.py                        # on the GPU machine: at most ~6 minutes
    python3 bench/gpu_table.py --bin path/to/mnist-gpu --out results/
    python3 bench/gpu_table.py --quick                # the same items at tiny sizes (lavapipe)

It runs, in this order, each `mnist-gpu bench --backend gpu --json` call under what is left of
the time budget (whatever does not fit is listed as skipped, never silently dropped):
  1. the adapter: name, driver, type, cooperative-matrix tiles (`bench --adapter-info`);
  2. our rows: 784-10-10 and 784-512-10 at batch 64, 256, 1024, 8192 and the full 60,000, with
     `--profile` (GPU time per kernel, where the adapter has timestamp queries);
  3. every switch (SWITCHES below: ours and each `--fused` variant) at the batches
     where it matters, beside the default row of the same network and batch;
  4. the peers on the same card, where `import torch` / `import jax` work and see a GPU:
     PyTorch eager, PyTorch with the step in a CUDA graph, JAX with an epoch under jit/lax.scan
     (bench/peers/).
It writes one Markdown report and one JSON file into --out, and prints a summary.

The binary is taken as built (default target/release/mnist-gpu), so a prebuilt one can be
copied to the GPU machine. Only the Python standard library is needed (the peers need theirs).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.join(HERE, "peers")

# The sizes of a real run and of --quick (lavapipe: a software adapter on the CPU cores).
FULL = {"samples": 60000, "batches": ["64", "256", "1024", "8192", "full"], "budget": 360.0}
# --quick's wide network: still wider than the fused step's 64 units (so the per-operation path
# with its tiled and split-K products), small enough for a software adapter.
QUICK = {"samples": 512, "batches": ["64", "full"], "budget": 600.0, "hidden": {512: 96}}
# A batch of the full table → the --quick batch that stands for it.
QUICK_BATCH = {"64": "64", "256": "64", "1024": "full", "8192": "full", "full": "full"}
NETWORKS = [10, 512]

# Each switch: what it passes (arguments, environment), the networks and batches where it
# matters, the bench flag that must exist for it to run (None: always), and the prediction it
# settles (bench/NOTES.md says why). Add a switch here and it is in the table.
SWITCHES = [
    {
        "name": "shader checks on",
        "env": {"MNIST_GPU_SHADER_CHECKS": "1"},
        "args": [],
        "networks": [10, 512],
        "batches": ["64", "1024", "full"],
        "requires": None,
        "prediction": "checks off (the default) at least 1.3x faster than on for the fused "
                      "784-10-10 step at 1024 and full; within 10% at batch 64",
    },
    {
        "name": "--block 16",
        "env": {},
        "args": ["--block", "16"],
        "networks": [10],
        "batches": ["64", "256"],
        "requires": "--block",
        "prediction": "blocks of 16 beat the default 32 at batch 64 (4 workgroups instead of 2)",
    },
    {
        "name": "--block 8",
        "env": {},
        "args": ["--block", "8"],
        "networks": [10],
        "batches": ["64", "256"],
        "requires": "--block",
        "prediction": "blocks of 8 beat 16 at batch 64 only if a workgroup's fixed cost is "
                      "under ~2 us",
    },
    {
        "name": "--matmul coop",
        "env": {},
        "args": ["--matmul", "coop"],
        "networks": [512],
        "batches": ["1024", "8192", "full"],
        "requires": "--matmul",
        "prediction": "the default tiles (f32 inputs first: 8x8 f32 on NVIDIA) no better than "
                      "the plain kernels on 784-512-10",
    },
    {
        "name": "--matmul coop --coop-tile f16",
        "env": {},
        "args": ["--matmul", "coop", "--coop-tile", "f16"],
        "networks": [512],
        "batches": ["1024", "8192", "full"],
        "requires": "--coop-tile",
        "prediction": "16x16 f16 tiles at least 2x the plain f32 kernels on 784-512-10 at "
                      "8192 and full batch (where the adapter offers them)",
    },
    {
        "name": "--split-k 264",
        "env": {},
        "args": ["--split-k", "264"],
        "networks": [512],
        "batches": ["8192", "full"],
        "requires": "--split-k",
        "prediction": "two whole waves on 132 SMs (dW1: 9 slices, 252 workgroups, instead of "
                      "10 and 280): matmul tiled's GPU time per step at full batch 5-15% lower",
    },
    {
        "name": "--split-k 132",
        "env": {},
        "args": ["--split-k", "132"],
        "networks": [512],
        "batches": ["8192", "full"],
        "requires": "--split-k",
        "prediction": "one wave (dW1: 4 slices, 112 workgroups): slower than 264 at full batch "
                      "(15% of the SMs idle, longer slices); a tie at 8192",
    },
    {
        "name": "--forward-split-k 4",
        "env": {},
        "args": ["--forward-split-k", "4"],
        "networks": [512],
        "batches": ["1024", "8192"],
        "requires": "--forward-split-k",
        "prediction": "W1·X in 4 slices (128 workgroups, one wave of 132 SMs, instead of 32): at "
                      "batch 1024 the forward product's GPU time per step at least 1.5x lower "
                      "(matmul tiled at least 20% lower, sum_partials adding under a tenth of "
                      "that); at 8192 within 5% (W1·X not split: its slices would pass 16 MiB; only the "
                      "small W2·A1 is)",
    },
]

# The fused step's candidate variants (`bench --fused`, issue 22; shaders/fused.wgsl's header and
# bench/NOTES.md say what each changes and why its prediction), and the block chosen from the batch.
SWITCHES += [
    {
        "name": "--fused dw1-spread",
        "env": {},
        "args": ["--fused", "dw1-spread"],
        "networks": [10],
        "batches": ["8192", "full"],
        "requires": "--fused",
        "prediction": "gradients 15-30% faster at 60,000 and 8192, within 5% at 64; falsified if not >= 10% faster at 60,000",
    },
    {
        "name": "--fused early-labels",
        "env": {},
        "args": ["--fused", "early-labels"],
        "networks": [10],
        "batches": ["64", "256", "1024"],
        "requires": "--fused",
        "prediction": "gradients 0.3-1 us faster per block at batch 64 (3-8% of the step); falsified if batch 64 is not >= 2% faster",
    },
    {
        "name": "--fused tree-sums",
        "env": {},
        "args": ["--fused", "tree-sums"],
        "networks": [10],
        "batches": ["64", "256", "1024"],
        "requires": "--fused",
        "prediction": "gradients 5-10% faster at batch 64, 3-8% at 60,000; falsified if slower at 64",
    },
    {
        "name": "--fused fast-bytes",
        "env": {},
        "args": ["--fused", "fast-bytes"],
        "networks": [10],
        "batches": ["8192", "full"],
        "requires": "--fused",
        "prediction": "alone 3-10% faster gradients at 60,000; falsified if < 2% (then the conversion was free)",
    },
    {
        "name": "--fused wide-update",
        "env": {},
        "args": ["--fused", "wide-update"],
        "networks": [10],
        "batches": ["8192", "full"],
        "requires": "--fused",
        "prediction": "update >= 2x faster at 60,000, unchanged at <= 1024; falsified if < 1.5x at 60,000",
    },
    {
        "name": "--fused all",
        "env": {},
        "args": ["--fused", "all"],
        "networks": [10],
        "batches": ["64", "1024", "full"],
        "requires": "--fused",
        "prediction": "at least the best single switch at every batch; slower than one alone means a pair interacts",
    },
    {
        "name": "--block auto",
        "env": {},
        "args": ["--block", "auto"],
        "networks": [10],
        "batches": ["64", "256", "1024"],
        "requires": "--block",
        "prediction": "gradients 2-3x faster at 64 and 256, >= 1.5x at 1024, identical at >= 4096; falsified if batch 64 is not >= 1.5x faster",
    },
    {
        "name": "--fused all --block auto",
        "env": {},
        "args": ["--fused", "all", "--block", "auto"],
        "networks": [10],
        "batches": ["64", "1024", "full"],
        "requires": "--fused",
        "prediction": "the best of the rows above at every batch",
    },
]

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "mnist-gpu"),
                   help="the mnist-gpu binary (default: target/release/mnist-gpu)")
    p.add_argument("--out", default=None,
                   help="folder for gpu_table.md and gpu_table.json (default: "
                        "bench/results/gpu_table-<UTC time>)")
    p.add_argument("--quick", action="store_true",
                   help="the same items at tiny sizes (512 samples), for lavapipe and tests")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole table (default 360; --quick 600)")
    p.add_argument("--no-peers", action="store_true", help="leave PyTorch and JAX out")
    args = p.parse_args()
    if not os.access(args.bin, os.X_OK):
        p.error(f"--bin {args.bin}: not an executable file (build it: cargo build --release)")
    sizes = QUICK if args.quick else FULL
    budget = args.budget if args.budget is not None else sizes["budget"]
    if budget <= 0:
        p.error("--budget must be positive")
    out = args.out or os.path.join(
        HERE, "results", "gpu_table-" + datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y%m%d-%H%M%S"))
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        p.error(f"--out {out}: {e}")

    table = Table(args.bin, sizes, budget, args.quick)
    table.adapter_info()
    if table.adapter is not None:
        table.our_rows()
        table.switch_rows()
        table.training_rows()
    if args.no_peers:
        table.absent.append({"peer": "pytorch, jax", "why": "--no-peers"})
    else:
        table.peer_rows()
    report = table.report()
    md_path = os.path.join(out, "gpu_table.md")
    json_path = os.path.join(out, "gpu_table.json")
    with open(md_path, "w") as f:
        f.write(markdown(report))
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(summary(report))
    print(f"report: {md_path}\njson: {json_path}")
    return 0 if table.adapter is not None else 1


class Table:
    """The measurements so far, and what is left of the budget."""

    def __init__(self, binary, sizes, budget, quick):
        self.binary = binary
        self.sizes = sizes
        self.quick = quick
        self.budget = budget
        self.started = time.monotonic()
        self.adapter = None
        self.rows = []      # ours: default and switches
        self.peers = []     # other tools' rows
        self.absent = []    # peers not run, and why
        self.skipped = []   # items the budget left out
        self.errors = []    # items that failed, with the message
        self.training = []  # training's samples/s beside bench's on the same data size
        self.help = run_text([binary, "bench", "--help"]) or ""

    def left(self):
        return self.budget - (time.monotonic() - self.started)

    def batches(self, wanted):
        """The batches of `wanted` (full-table names) at this run's sizes, in order, once."""
        names = [QUICK_BATCH[b] for b in wanted] if self.quick else list(wanted)
        return list(dict.fromkeys(names))

    def adapter_info(self):
        line, err = self.bench(["--adapter-info"], {}, timeout=120)
        if line is None:
            self.errors.append({"item": "adapter", "error": err})
            return
        self.adapter = line

    def bench(self, args, env, timeout=None, samples=None):
        """One `bench --backend gpu` call: its JSON line, or (None, why)."""
        left = self.left() if timeout is None else min(timeout, max(self.left(), 1))
        cmd = [self.binary, "bench", "--backend", "gpu", "--samples",
               str(samples or self.sizes["samples"])] + args
        full_env = dict(os.environ, **env)
        try:
            done = subprocess.run(cmd, env=full_env, capture_output=True, text=True,
                                  timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            return None, f"out of time after {left:.0f} s: {' '.join(cmd[1:])}"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            return None, f"exit {done.returncode}: {last}"
        lines = done.stdout.strip().splitlines()
        try:
            return json.loads(lines[-1]), None
        except (IndexError, ValueError):
            return None, "no JSON line in bench's output"

    def measure(self, item, hidden, batches, args, env, switch=None):
        """Rows of `item` on 784-hidden-10 at `batches`, with --profile."""
        hidden = self.sizes.get("hidden", {}).get(hidden, hidden)
        if self.left() < 5:
            self.skipped.append({"item": item, "hidden": hidden, "batches": batches})
            return
        wanted = ["--hidden", str(hidden), "--batch-sizes", ",".join(batches), "--profile",
                  "--json"] + args
        results, err = self.bench(wanted, env)
        if results is None:
            self.errors.append({"item": item, "hidden": hidden, "batches": batches,
                                "error": err})
            return
        for r in results:
            self.rows.append(row(r, item, hidden, switch))

    def our_rows(self):
        for hidden in NETWORKS:
            self.measure("default", hidden, self.batches(self.sizes["batches"]), [], {})

    def switches(self):
        """SWITCHES the binary has, and those it lacks."""
        have, lacking = [], []
        for s in SWITCHES:
            (have if s["requires"] is None or s["requires"] in self.help else lacking).append(s)
        return have, lacking

    def switch_rows(self):
        have, lacking = self.switches()
        for s in lacking:
            self.skipped.append({"item": s["name"],
                                 "why": f"this binary has no {s['requires']}"})
        for s in have:
            # --quick checks that every item runs and reports, not what it measures: each
            # switch on its first network at its first batch.
            networks = s["networks"][:1] if self.quick else s["networks"]
            batches = self.batches(s["batches"])
            for hidden in networks:
                self.measure(s["name"], hidden, batches[:1] if self.quick else batches,
                             s["args"], s["env"], switch=s)

    def training_rows(self):
        """Training (the CLI's loop, with its reads of the step statistics) beside bench on
        the repository's 10,000 training images, 784-10-10: batch 64 with only the divergence
        checks between the first and last line, and full batch with a line every step."""
        images = os.path.join(ROOT, "data", "mnist", "train-10k-images-idx3-ubyte.gz")
        if not os.path.exists(images):
            self.skipped.append({"item": "training vs bench", "why": f"no {images}"})
            return
        epochs, iterations = ("1", "2") if self.quick else ("10", "15")
        runs = [
            ("64", ["--batch-size", "64", "--epochs", epochs, "--log-every", "100000"]),
            ("full", ["--iterations", iterations]),
        ]
        for batch, args in runs:
            if self.left() < 10:
                self.skipped.append({"item": "training vs bench", "batch": batch})
                continue
            cmd = [self.binary, "--backend", "gpu", "--train", images, "--dev-size", "0"] + args
            try:
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=max(self.left(), 1))
            except subprocess.TimeoutExpired:
                self.errors.append({"item": f"training batch {batch}", "error": "out of time"})
                continue
            rate = training_rate(done.stdout)
            if done.returncode != 0 or rate is None:
                last = (done.stderr.strip().splitlines() or ["no samples/s line"])[-1]
                self.errors.append({"item": f"training batch {batch}", "error": last})
                continue
            bench, err = self.bench(["--batch-sizes", batch, "--json"], {}, samples=10000)
            if bench is None:
                self.errors.append({"item": f"bench beside training, batch {batch}",
                                    "error": err})
                continue
            self.training.append({
                "batch": batch, "training_samples_per_second": rate,
                "bench_samples_per_second": bench[0]["samples_per_second"],
                "training_vs_bench": rate / bench[0]["samples_per_second"],
                "prediction": "training within 10% of bench at batch 64 (no drain between "
                              "progress lines); at full batch unchanged",
            })

    def peer_rows(self):
        for peer in peer_list(self.quick):
            why = peer_missing(peer)
            if why:
                self.absent.append({"peer": peer["name"], "why": why})
                continue
            for hidden in NETWORKS:
                batches = self.batches(self.sizes["batches"])
                if self.left() < 10:
                    self.skipped.append({"item": peer["name"], "hidden": hidden})
                    continue
                cmd = [sys.executable, os.path.join(PEERS, peer["script"])] + peer["args"] + [
                    "--hidden", str(hidden), "--samples", str(self.sizes["samples"]),
                    "--batch-sizes", ",".join(batches), "--json"]
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True,
                                          timeout=max(self.left(), 1), cwd=PEERS)
                except subprocess.TimeoutExpired:
                    self.errors.append({"item": peer["name"], "hidden": hidden,
                                        "error": "out of time"})
                    continue
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
                    self.errors.append({"item": peer["name"], "hidden": hidden,
                                        "error": f"exit {done.returncode}: {last}"})
                    continue
                try:
                    results = json.loads(done.stdout.strip().splitlines()[-1])
                except (IndexError, ValueError):
                    self.errors.append({"item": peer["name"], "error": "no JSON line"})
                    continue
                for r in results:
                    self.peers.append(row(r, peer["name"], hidden, None))

    def report(self):
        for r in self.rows:
            base = next((d for d in self.rows if d["item"] == "default"
                         and d["hidden"] == r["hidden"] and d["batch"] == r["batch"]), None)
            r["vs_default"] = (r["samples_per_second"] / base["samples_per_second"]
                               if base and r["item"] != "default" else None)
        return {
            "what": "mnist-gpu GPU table (bench/gpu_table.py)",
            "quick": self.quick,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "binary": self.binary,
            "host": f"{platform.node()} ({platform.machine()})",
            "samples": self.sizes["samples"],
            "budget_seconds": self.budget,
            "seconds": round(time.monotonic() - self.started, 1),
            "adapter": self.adapter,
            "rows": self.rows,
            "peers": self.peers,
            "training_vs_bench": self.training,
            "peers_absent": self.absent,
            "skipped": self.skipped,
            "errors": self.errors,
        }


def row(r, item, hidden, switch):
    """One measurement as the report keeps it."""
    profile = r.get("profile") or {}
    gpu = profile.get("gpu_seconds_per_step")
    steps = r.get("steps") or 0
    wall = r["seconds"] / steps if steps else None
    return {
        "item": item,
        "hidden": hidden,
        "network": f"784-{hidden}-10",
        "batch": r["batch_size"],
        "full_batch": r.get("full_batch", False),
        "samples_per_second": r["samples_per_second"],
        "wall_us_per_step": wall * 1e6 if wall else None,
        "gpu_us_per_step": gpu * 1e6 if gpu is not None else None,
        "path": r.get("path"),
        "block": r.get("block"),
        "matmul": r.get("matmul"),
        "shader_checks": r.get("shader_checks"),
        "adapter": r.get("adapter"),
        "prediction": switch["prediction"] if switch else None,
        "kernels": [(k["kernel"], k["seconds_per_step"] * 1e6)
                    for k in profile.get("kernels", [])],
    }


def training_rate(stdout):
    """The samples/s of training's last line (`done: …, 41080 training samples/s`)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("done:") and "training samples/s" in line:
            try:
                return float(line.rsplit(",", 1)[1].split()[0])
            except (IndexError, ValueError):
                return None
    return None


def peer_list(quick):
    return [
        {"name": "pytorch eager", "script": "pytorch_cpu.py", "args": ["--device", "cuda"],
         "needs": "torch"},
        {"name": "pytorch cuda graph", "script": "pytorch_cuda_graph.py", "args": [],
         "needs": "torch"},
        {"name": "jax lax.scan epoch", "script": "jax_scan.py", "args": [], "needs": "jax"},
    ]


_PROBED = {}


def peer_missing(peer):
    """Why `peer` cannot run here (its module absent, or no GPU it sees), or None."""
    module = peer["needs"]
    if module not in _PROBED:
        probe = {
            "torch": "import torch; print(torch.cuda.is_available())",
            "jax": "import jax; print(jax.devices()[0].platform in ('gpu', 'cuda', 'rocm'))",
        }[module]
        try:
            done = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                  text=True, timeout=120)
        except subprocess.TimeoutExpired:
            _PROBED[module] = f"`import {module}` took over 2 minutes"
            return _PROBED[module]
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            _PROBED[module] = f"`import {module}` failed here ({last})"
        elif done.stdout.strip().splitlines()[-1:] != ["True"]:
            _PROBED[module] = f"{module} sees no GPU here"
        else:
            _PROBED[module] = None
    return _PROBED[module]


def fmt(v, digits=0):
    return "" if v is None else f"{v:,.{digits}f}"


def batch_name(r):
    return f"full {r['batch']:,}" if r["full_batch"] else f"{r['batch']:,}"


def markdown(rep):
    a = rep["adapter"] or {}
    out = [f"# mnist-gpu GPU table{' (--quick: tiny sizes, not a measurement)' if rep['quick'] else ''}", ""]
    out.append(f"{rep['date_utc']}, `{rep['binary']}` on {rep['host']}, "
               f"{rep['samples']:,} synthetic samples, {rep['seconds']} s of a "
               f"{rep['budget_seconds']:.0f} s budget.")
    out.append("")
    out.append("## Adapter")
    out.append("")
    if rep["adapter"] is None:
        out.append("No GPU adapter opened: " + "; ".join(e["error"] for e in rep["errors"]
                                                         if e["item"] == "adapter"))
    else:
        out.append(f"- adapter: {a.get('adapter')}")
        out.append(f"- driver: {a.get('driver') or '?'} ({a.get('driver_info') or '?'})")
        coop = a.get("cooperative_matrices") or []
        out.append(f"- cooperative matrices: {', '.join(coop) if coop else 'none'}")
        out.append(f"- subgroup sizes: {a.get('subgroup_sizes')}; timestamp queries: "
                   f"{a.get('timestamp_queries')}; shader checks: {a.get('shader_checks')}")
        if a.get("software_adapter"):
            out.append("- a software adapter on the CPU cores: its timings are not a GPU's")
    out.append("")
    out.append("## Ours and the switches")
    out.append("")
    out.append("| network | item | batch | samples/s | vs default | wall µs/step | GPU µs/step "
               "| path | block | matmul | checks |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |")
    for r in sorted(rep["rows"], key=lambda r: (r["hidden"], r["item"] != "default",
                                                r["item"], r["batch"])):
        vs = "" if r["vs_default"] is None else f"{r['vs_default']:.2f}×"
        out.append(f"| {r['network']} | {r['item']} | {batch_name(r)} | "
                   f"{fmt(r['samples_per_second'])} | {vs} | {fmt(r['wall_us_per_step'], 1)} | "
                   f"{fmt(r['gpu_us_per_step'], 1)} | {r['path'] or ''} | {r['block'] or ''} | "
                   f"{r['matmul'] or ''} | {r['shader_checks'] or ''} |")
    predictions = {r["item"]: r["prediction"] for r in rep["rows"] if r["prediction"]}
    if predictions:
        out += ["", "Predictions these rows settle (bench/NOTES.md):", ""]
        out += [f"- {item}: {p}" for item, p in predictions.items()]
    if rep["training_vs_bench"]:
        out += ["", "## Training beside bench (784-10-10, 10,000 images)", ""]
        out.append("| batch | training samples/s | bench samples/s | training ÷ bench |")
        out.append("| --- | ---: | ---: | ---: |")
        for t in rep["training_vs_bench"]:
            out.append(f"| {t['batch']} | {fmt(t['training_samples_per_second'])} | "
                       f"{fmt(t['bench_samples_per_second'])} | {t['training_vs_bench']:.2f} |")
        out.append("")
        out.append(f"Prediction: {rep['training_vs_bench'][0]['prediction']}")
    out += ["", "## Peers on the same machine", ""]
    if rep["peers"]:
        out.append("| network | peer | batch | samples/s | adapter |")
        out.append("| --- | --- | ---: | ---: | --- |")
        for r in rep["peers"]:
            out.append(f"| {r['network']} | {r['item']} | {batch_name(r)} | "
                       f"{fmt(r['samples_per_second'])} | {r['adapter']} |")
    for p in rep["peers_absent"]:
        out.append(f"- {p['peer']}: absent, {p['why']}")
    if rep["skipped"] or rep["errors"]:
        out += ["", "## Not measured", ""]
        for s in rep["skipped"]:
            out.append(f"- skipped: {s['item']}" + (f" ({s['why']})" if "why" in s
                                                     else " (out of the time budget)"))
        for e in rep["errors"]:
            out.append(f"- failed: {e['item']}: {e['error']}")
    return "\n".join(out) + "\n"


def summary(rep):
    a = rep["adapter"] or {}
    lines = [f"GPU table: {a.get('adapter', 'no adapter')}, driver {a.get('driver') or '?'}; "
             f"cooperative matrices: {', '.join(a.get('cooperative_matrices') or []) or 'none'}"]
    for r in rep["rows"]:
        if r["item"] == "default":
            lines.append(f"  {r['network']} batch {batch_name(r)}: "
                         f"{fmt(r['samples_per_second'])} samples/s")
    for r in rep["rows"]:
        if r["vs_default"] is not None:
            lines.append(f"  {r['item']}: {r['network']} batch {batch_name(r)}: "
                         f"{r['vs_default']:.2f}× default")
    for t in rep["training_vs_bench"]:
        lines.append(f"  training ÷ bench, batch {t['batch']}: {t['training_vs_bench']:.2f}")
    for r in rep["peers"]:
        lines.append(f"  {r['item']}: {r['network']} batch {batch_name(r)}: "
                     f"{fmt(r['samples_per_second'])} samples/s")
    for p in rep["peers_absent"]:
        lines.append(f"  {p['peer']}: absent ({p['why']})")
    if rep["skipped"]:
        lines.append(f"  skipped: {len(rep['skipped'])} items (see the report)")
    if rep["errors"]:
        lines.append(f"  failed: {len(rep['errors'])} items (see the report)")
    return "\n".join(lines)


def run_text(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    sys.exit(main())
