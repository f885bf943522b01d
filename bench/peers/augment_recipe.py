"""The README's best row in PyTorch, for a time to set ours against: 784-1600-10 ReLU, Adam
(α 0.001), batches of 64, 80 epochs, the rate times 0.95 after each, every training image
warped afresh each step by an affine map and an elastic field of mnist-gpu's default strengths
(`src/augment.rs`), on the 10,000 embedded digits (data/mnist/train-10k-*), tested on t10k.

The warps as PyTorch code does them: `affine_grid` + `grid_sample` (bilinear, zeros outside),
the field uniform noise smoothed by a separable Gaussian (`conv2d`, truncated at 3σ, zeros
outside) scaled to an RMS of α pixels, added to the sampling grid; the warped images rounded
to bytes as ours are. The same distributions, not the same numbers.

    python3 bench/peers/augment_recipe.py [--epochs 80] [--seed 1] [--threads N] [--device cpu]

prints one JSON line: seconds (training only, data loading excluded), test accuracy, and the
recipe. Compare with `mnist-gpu --backend cpu` running the README's row on the same machine,
one after the other, with nothing else running.
"""

import argparse
import gzip
import json
import math
import os
import struct
import time

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SIDE = 28
# mnist-gpu's defaults (augment::Distortion::default).
ROTATION, SCALE, SHEAR, TRANSLATION = 0.2, 0.12, 0.15, 1.7
ALPHA, SIGMA = 1.0, 4.0


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def gaussian_taps(sigma):
    radius = min(math.ceil(3 * sigma), SIDE)
    k = torch.tensor([math.exp(-(o * o) / (2 * sigma * sigma)) for o in range(-radius, radius + 1)])
    return k / k.sum()


def warp(images, taps, gain, generator):
    """images: (n, 1, 28, 28) floats 0–255 → warped, rounded to bytes, as floats."""
    n, device = images.shape[0], images.device
    u = lambda: 2 * torch.rand(n, generator=generator, device=device) - 1
    theta, s, h = ROTATION * u(), 1 + SCALE * u(), SHEAR * u()
    ty, tx = TRANSLATION * u(), TRANSLATION * u()
    cos, sin = torch.cos(theta), torch.sin(theta)
    # Ours, on (y, x) in pixels about the centre: A = R(θ)·H(h)/s. affine_grid maps output
    # (x, y) to input (x, y) in [−1, 1] units: the same map with the axes swapped.
    a00, a01 = (cos - sin * h) / s, -sin / s
    a10, a11 = (sin + cos * h) / s, cos / s
    scale = 2.0 / SIDE  # pixels to grid units (align_corners=False)
    matrix = torch.stack([
        torch.stack([a11, a10, tx * scale], 1),
        torch.stack([a01, a00, ty * scale], 1),
    ], 1)
    grid = F.affine_grid(matrix, (n, 1, SIDE, SIDE), align_corners=False)
    noise = 2 * torch.rand(n, 2, SIDE, SIDE, generator=generator, device=device) - 1
    k = taps.to(device)
    r = k.numel() // 2
    field = F.conv2d(noise.reshape(2 * n, 1, SIDE, SIDE), k.view(1, 1, 1, -1), padding=(0, r))
    field = F.conv2d(field, k.view(1, 1, -1, 1), padding=(r, 0)).reshape(n, 2, SIDE, SIDE)
    # Channel 0 is dy, 1 is dx; the grid's last axis is (x, y).
    grid = grid + gain * scale * field.permute(0, 2, 3, 1).flip(-1)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    return torch.floor(warped + 0.5).clamp(0, 255)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = os.path.join(ROOT, "data", "mnist")
    x = idx(os.path.join(data, "train-10k-images-idx3-ubyte.gz")).float().unsqueeze(1).to(device)
    y = idx(os.path.join(data, "train-10k-labels-idx1-ubyte.gz")).long().to(device)
    tx = idx(os.path.join(data, "t10k-images-idx3-ubyte.gz")).float().reshape(-1, 784).to(device)
    ty = idx(os.path.join(data, "t10k-labels-idx1-ubyte.gz")).long().to(device)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1600), torch.nn.ReLU(),
                                torch.nn.Linear(1600, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)
    taps = gaussian_taps(SIGMA)
    gain = ALPHA * math.sqrt(3) / float((taps * taps).sum())
    generator = torch.Generator(device=device).manual_seed(args.seed)
    n = x.shape[0]
    started = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(n, generator=generator, device=device)
        for start in range(0, n, 64):
            batch = order[start:start + 64]
            images = warp(x[batch], taps, gain, generator).reshape(-1, 784) / 255.0
            loss = F.cross_entropy(model(images), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        accuracy = (model(tx / 255.0).argmax(1) == ty).float().mean().item()
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "device": str(device),
                      "threads": args.threads, "epochs": args.epochs, "seed": args.seed,
                      "seconds": round(seconds, 2), "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
