#!/usr/bin/env python3
"""PyTorch on a CUDA GPU with each training step captured once in a CUDA graph and replayed:
the same network and SGD as pytorch_cpu.py, without the per-kernel launch cost of eager mode
(what a PyTorch user does to go fast at small batches). The batch is copied into the graph's
static input before each replay; a shorter last batch of a pass has a graph of its own.

    python3 pytorch_cuda_graph.py --batch-sizes 64,1024,full --samples 60000 --json
"""

import torch
from torch import nn

from common import ALPHA, measure, parse_args, report, synthetic_data


def captured_step(model, loss_fn, optimizer, X, Y, length):
    """A function replaying the step on `length` samples from a start position, captured
    after a few eager warm-up steps on a side stream (as CUDA graphs need)."""
    x = X[:length].clone()
    y = Y[:length].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss_fn(model(x), y).backward()
        optimizer.step()

    def replay(start):
        x.copy_(X[start:start + length])
        y.copy_(Y[start:start + length])
        graph.replay()
    return replay


def main():
    args = parse_args("Times PyTorch training steps replayed from CUDA graphs.")
    if not torch.cuda.is_available():
        raise SystemExit("error: PyTorch sees no CUDA device")
    device = torch.device("cuda")
    torch.manual_seed(1)
    images, labels = synthetic_data(args.samples)
    X = torch.from_numpy(images).to(device=device, dtype=torch.float32) / 255.0
    Y = torch.from_numpy(labels).to(device)
    results = []
    for batch in args.sizes:
        model = nn.Sequential(nn.Linear(784, args.hidden), nn.ReLU(),
                              nn.Linear(args.hidden, 10)).to(device)
        loss_fn = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=ALPHA)
        graphs = {}

        def step(start, length):
            if length not in graphs:
                graphs[length] = captured_step(model, loss_fn, optimizer, X, Y, length)
            graphs[length](start)

        # Both graphs (the full batch and a pass's shorter last one) captured before timing.
        step(0, batch)
        if args.samples % batch:
            step(0, args.samples % batch)
        results.append(measure(step, args.samples, batch,
                               lambda: torch.cuda.synchronize(device)))
    report(args, "pytorch-cuda-graph", torch.cuda.get_device_name(device), results)


if __name__ == "__main__":
    main()
