#!/usr/bin/env python3
"""The same network the way PyTorch users write it: nn.Sequential(Linear(784, H), ReLU,
Linear(H, 10)), CrossEntropyLoss, torch.optim.SGD (or Adam), float32, all CPU cores, the data turned
into float tensors once up front. Times training steps on synthetic data of MNIST's shape,
as `mnist-gpu bench` times ours.

    python3 pytorch_cpu.py --batch-sizes 64,1024,full --samples 60000 --json
    python3 pytorch_cpu.py --device cuda ...   # if a CUDA GPU is there
"""

import os

import torch
from torch import nn

from common import ALPHA, cpu_description, measure, parse_args, report, synthetic_data


def main():
    args = parse_args(
        "Times PyTorch training steps of the 784-10-10 network.",
        lambda p: (
            p.add_argument("--device", default="cpu", help="cpu, or cuda if available"),
            p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                           help="CPU threads for PyTorch (default: all cores)"),
            p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                           help="torch.optim.SGD, or torch.optim.Adam with its defaults "
                                "(the constants of mnist-gpu's --optimizer adam)"),
        ),
    )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: PyTorch sees no CUDA device")
    device = torch.device(args.device)
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(1)

    images, labels = synthetic_data(args.samples)
    X = torch.from_numpy(images).to(device=device, dtype=torch.float32) / 255.0
    Y = torch.from_numpy(labels).to(device)
    if device.type == "cuda":
        adapter = torch.cuda.get_device_name(device)
        wait = lambda: torch.cuda.synchronize(device)  # noqa: E731
    else:
        adapter = cpu_description()
        wait = lambda: None  # noqa: E731

    results = []
    for batch in args.sizes:
        model = nn.Sequential(nn.Linear(784, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
        model.to(device)
        loss_fn = nn.CrossEntropyLoss()
        if args.optimizer == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=ALPHA)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=ALPHA)

        def step(start, length):
            optimizer.zero_grad()
            loss = loss_fn(model(X[start:start + length]), Y[start:start + length])
            loss.backward()
            optimizer.step()

        results.append(measure(step, args.samples, batch, wait))
    report(args, f"pytorch-{device.type}", adapter, results)


if __name__ == "__main__":
    main()
