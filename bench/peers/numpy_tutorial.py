#!/usr/bin/env python3
"""The NumPy network of the "neural network from scratch" MNIST tutorials (the Kaggle
digit-recognizer notebooks): float64 matrices with one sample per column, W1.dot(X), ReLU,
softmax, dZ2 = A2 - one_hot(Y), gradient descent. Written here in that style to time its
training on synthetic data of MNIST's shape, as `mnist-gpu bench` times ours.

Full batch is the tutorials' way; a mini-batch is a slice of X's columns.

    python3 numpy_tutorial.py --batch-sizes 64,1024,full --samples 60000 --json
"""

import numpy as np

from common import ALPHA, cpu_description, measure, parse_args, report, synthetic_data


def init_params(hidden):
    # The tutorials' initialisation: uniform in [-0.5, 0.5).
    W1 = np.random.rand(hidden, 784) - 0.5
    b1 = np.random.rand(hidden, 1) - 0.5
    W2 = np.random.rand(10, hidden) - 0.5
    b2 = np.random.rand(10, 1) - 0.5
    return W1, b1, W2, b2


def ReLU(Z):
    return np.maximum(Z, 0)


def ReLU_deriv(Z):
    return Z > 0


def softmax(Z):
    # Shifted by the column maximum so exp cannot overflow; the tutorials leave that out.
    E = np.exp(Z - Z.max(axis=0))
    return E / np.sum(E, axis=0)


def forward_prop(W1, b1, W2, b2, X):
    Z1 = W1.dot(X) + b1
    A1 = ReLU(Z1)
    Z2 = W2.dot(A1) + b2
    A2 = softmax(Z2)
    return Z1, A1, Z2, A2


def one_hot(Y):
    one_hot_Y = np.zeros((Y.size, 10))
    one_hot_Y[np.arange(Y.size), Y] = 1
    return one_hot_Y.T


def backward_prop(Z1, A1, Z2, A2, W1, W2, X, Y):
    m = Y.size
    dZ2 = A2 - one_hot(Y)
    dW2 = 1 / m * dZ2.dot(A1.T)
    # Per unit; the notebook's np.sum(dZ2) sums over everything, a known slip.
    db2 = 1 / m * np.sum(dZ2, axis=1, keepdims=True)
    dZ1 = W2.T.dot(dZ2) * ReLU_deriv(Z1)
    dW1 = 1 / m * dZ1.dot(X.T)
    db1 = 1 / m * np.sum(dZ1, axis=1, keepdims=True)
    return dW1, db1, dW2, db2


def update_params(W1, b1, W2, b2, dW1, db1, dW2, db2, alpha):
    W1 = W1 - alpha * dW1
    b1 = b1 - alpha * db1
    W2 = W2 - alpha * dW2
    b2 = b2 - alpha * db2
    return W1, b1, W2, b2


def main():
    args = parse_args("Times the NumPy tutorial network's training steps.")
    images, labels = synthetic_data(args.samples)
    # The notebook's layout: data.T, pixels scaled by 255, one sample per column.
    X = images.T / 255.0
    Y = labels
    np.random.seed(1)
    results = []
    for batch in args.sizes:
        params = list(init_params(args.hidden))

        def step(start, length):
            X_b, Y_b = X[:, start:start + length], Y[start:start + length]
            Z1, A1, Z2, A2 = forward_prop(*params, X_b)
            grads = backward_prop(Z1, A1, Z2, A2, params[0], params[2], X_b, Y_b)
            params[:] = update_params(*params, *grads, ALPHA)

        results.append(measure(step, args.samples, batch))
    report(args, "numpy", cpu_description(), results)


if __name__ == "__main__":
    main()
