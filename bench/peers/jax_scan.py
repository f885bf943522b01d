#!/usr/bin/env python3
"""JAX on a GPU with a whole epoch in one compiled call: the steps of a pass over the data
under jax.jit and lax.scan (the fast way to write it in JAX), the same network, loss and SGD
as the other peers. Timed by whole epochs (samples per second of an epoch, median of 3 to 5
after a compiling warm-up), not step by step, since a step is not a call of its own here.

    python3 jax_scan.py --batch-sizes 64,1024,full --samples 60000 --json
"""

import statistics
import time

import jax
import jax.numpy as jnp

from common import ALPHA, parse_args, report, synthetic_data

EPOCH_RUNS = 5
BUDGET = 6.0  # seconds of timed epochs per batch size, at least 3 epochs


def init(hidden, key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (784, hidden), jnp.float32) * jnp.sqrt(2.0 / 784),
        "b1": jnp.zeros(hidden, jnp.float32),
        "w2": jax.random.normal(k2, (hidden, 10), jnp.float32) * jnp.sqrt(2.0 / hidden),
        "b2": jnp.zeros(10, jnp.float32),
    }


def loss(params, x, y):
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def sgd(params, x, y):
    grads = jax.grad(loss)(params, x, y)
    return jax.tree_util.tree_map(lambda p, g: p - ALPHA * g, params, grads)


def epoch_fn(batch, samples):
    """One compiled pass: the whole batches under lax.scan, then the shorter last one."""
    whole = samples // batch
    rest = samples - whole * batch

    @jax.jit
    def epoch(params, X, Y):
        xs = X[:whole * batch].reshape(whole, batch, 784)
        ys = Y[:whole * batch].reshape(whole, batch)
        params, _ = jax.lax.scan(lambda p, xy: (sgd(p, *xy), None), params, (xs, ys))
        if rest:
            params = sgd(params, X[whole * batch:], Y[whole * batch:])
        return params
    return epoch


def main():
    args = parse_args("Times JAX training epochs (jit + lax.scan).")
    device = jax.devices()[0]
    images, labels = synthetic_data(args.samples)
    X = jax.device_put(jnp.asarray(images, jnp.float32) / 255.0, device)
    Y = jax.device_put(jnp.asarray(labels, jnp.int32), device)
    results = []
    for batch in args.sizes:
        epoch = epoch_fn(batch, args.samples)
        params = init(args.hidden, jax.random.PRNGKey(1))
        params = jax.block_until_ready(epoch(params, X, Y))  # compiles
        times = []
        while len(times) < 3 or (len(times) < EPOCH_RUNS and sum(times) < BUDGET):
            t = time.perf_counter()
            params = jax.block_until_ready(epoch(params, X, Y))
            times.append(time.perf_counter() - t)
        seconds = statistics.median(times)
        steps = -(-args.samples // batch)
        results.append((steps, len(times), seconds, args.samples / seconds))
    report(args, "jax-scan", f"{device.device_kind} ({device.platform})", results)


if __name__ == "__main__":
    main()
