"""What the peer scripts share with `mnist-gpu bench`: the options, the synthetic data, the
timing protocol and the JSON line, so that their numbers and ours are measured alike."""

import argparse
import json
import math
import os
import time

PIXELS = 784
CLASSES = 10

# The same protocol as src/cli/bench.rs: a warm-up of at least one step and 0.2 s, timed runs
# of about 0.25 s sized from the warm-up's speed, 3 to 5 of them (fewer when one run is long,
# so a whole measurement stays near 6 s), and the median.
WARM_UP = 0.2
RUN = 0.25
RUNS, MIN_RUNS = 5, 3
MEASUREMENT = 6.0
# Small, so random data never drives the weights to NaN (whose arithmetic can be slower).
ALPHA = 0.01


def parse_args(description, extra=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--batch-sizes", default="64,256,1024,8192,full",
                   help="comma-separated; `full` is every sample (full-batch gradient descent)")
    p.add_argument("--samples", type=int, default=60000, help="synthetic training samples")
    p.add_argument("--hidden", type=int, default=10, help="hidden layer width")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON array, the last line of stdout")
    if extra:
        extra(p)
    args = p.parse_args()
    if args.samples < 1:
        p.error("--samples must be at least 1")
    if args.hidden < 1:
        p.error("--hidden must be at least 1")
    sizes = []
    for s in args.batch_sizes.split(","):
        s = s.strip()
        if s == "full":
            sizes.append(args.samples)
        elif s.isdigit() and int(s) >= 1:
            sizes.append(int(s))
        else:
            p.error(f"--batch-sizes: {s!r} is neither a positive number nor `full`")
        if sizes[-1] > args.samples:
            p.error(f"--batch-sizes: {sizes[-1]} is larger than the {args.samples} samples")
    args.sizes = sizes
    return args


def synthetic_data(samples, seed=1):
    """Random pixel bytes (samples, 784) and labels, like `mnist-gpu bench` (not the same
    numbers: throughput does not depend on them)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(samples, PIXELS), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, size=samples, dtype=np.int64)
    return images, labels


def cpu_description():
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import platform
    return f"{model or platform.machine() or 'cpu'}, {os.cpu_count()} threads"


def measure(step, samples, batch, wait=lambda: None):
    """Times `step(start, length)` over consecutive batches (the last of a pass shorter, as
    in training). `wait()` must block until queued work is done (a GPU's); it runs inside the
    timed region. Returns (steps per run, runs, median seconds, median samples/s)."""
    position = 0

    def one():
        nonlocal position
        length = min(batch, samples - position)
        step(position, length)
        position = 0 if position + length >= samples else position + length
        return length

    # The first step alone (one-time costs), then steps for WARM_UP whose speed sizes the runs.
    one()
    wait()
    started = time.perf_counter()
    warm = 0
    while warm == 0 or time.perf_counter() - started < WARM_UP:
        one()
        warm += 1
    wait()
    per_step = (time.perf_counter() - started) / warm
    steps = max(1, math.ceil(RUN / max(per_step, 1e-9)))
    runs = min(RUNS, max(MIN_RUNS, int(MEASUREMENT / (per_step * steps))))
    timed = []
    for _ in range(runs):
        t = time.perf_counter()
        trained = sum(one() for _ in range(steps))
        wait()
        seconds = time.perf_counter() - t
        timed.append((trained / max(seconds, 1e-9), seconds))
    timed.sort()
    rate, seconds = timed[len(timed) // 2]
    return steps, runs, seconds, rate


def report(args, backend, adapter, results):
    """Prints a table, then (with --json) the JSON array `mnist-gpu bench --json` prints."""
    print(f"{backend} on {adapter}: 784-{args.hidden}-10, {args.samples} synthetic samples")
    print(f"{'batch':>12}  {'samples/s':>12}")
    entries = []
    for batch, (steps, runs, seconds, rate) in zip(args.sizes, results):
        full = batch == args.samples
        print(f"{('full ' if full else '') + str(batch):>12}  {rate:>12.0f}")
        entries.append({
            "backend": backend,
            "adapter": adapter,
            "software_adapter": False,
            "batch_size": batch,
            "full_batch": full,
            "samples": args.samples,
            "hidden": [args.hidden],
            "steps": steps,
            "runs": runs,
            "seconds": seconds,
            "samples_per_second": rate,
        })
    if args.json:
        print(json.dumps(entries))
