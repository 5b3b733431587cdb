"""An expert's JAX program for many MLPs at once: the baseline the cpu engine is measured against
(bench_cpu_mlp.py --engines cpu,xjax), written as one would by hand for a sweep, without Keras.

M models of one shape (any depth and width, relu or tanh, binary, multiclass or regression;
each its own penalty factors, initial weights and minibatch order) are trained in one compiled
call: jax.jit of jax.vmap (or lax.map: OVER_MODELS) over the models of lax.scan over the
epochs, each a lax.scan over the minibatches (the last partial one masked) and then the test
set (and validation set) in one batch; only the penalty sums some model uses are computed.
Per model the same penalties (engines/penalties.py's [hidden layers, 12] factors), initial
weights (weights.initial_weights), minibatch order (weights.epoch_permutation) and Keras's
Adam (epsilon outside the square root) as actreg's engines, and Keras's history: the epoch's
batch losses and metric averaged by batch size, test_* and val_* on the end-of-epoch weights,
losses with their penalties. `check` holds the histories against the cpu engine's.
"""

from __future__ import annotations

import numpy as np

#: Keras's Adam defaults (as actreg's engines use them).
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7
#: How the program runs over the models: all at once (jax.vmap: each array gains a model axis)
#: or one after another inside the compiled call (lax.map: each model's arrays stay in cache).
#: Neither wins everywhere (one thread, Intel Xeon, CPU per model-epoch, 2026-12-05): map on
#: the tutorial 32 against 72 us, breast_cancer 670 against 1,286, [128]x3 tanh 599 against 815,
#: digits 1,233 against 1,658; vmap on [64,32] 16.8 against 18.9, diabetes 49 against 61.
OVER_MODELS = ("vmap", "map")


def prepare(jobs: list, epochs: int) -> dict:
    """The arrays of `jobs` (TrainJobs of one shape and one dataset): data, stacked initial
    weights [M, ...], penalty factors [M, L, 12], minibatch orders [M, epochs, steps * batch]
    (padding rows point at row 0 with weight 0), and the static shape."""
    from actreg_cli.data import job_dataset
    from actreg_cli.engines.penalties import coefficients
    from actreg_cli.tasks import output_units
    from actreg_cli.weights import epoch_permutation, initial_weights, layer_sizes, shuffle_seed

    config = jobs[0].config
    data = job_dataset(config, jobs[0].seed)
    for job in jobs[1:]:  # one split for all (no resample), as bench_cpu_mlp's shapes
        other = job_dataset(job.config, job.seed)
        assert np.array_equal(other.x_train, data.x_train), "jobs must share their data"
    n_out = output_units(data.task, data.n_classes)
    sizes = layer_sizes(data.n_features, list(config.model.hidden_units), n_out)
    weights = [initial_weights(sizes, job.seed) for job in jobs]
    n = data.n_train
    batch = min(config.training.batch_size, n)
    steps = -(-n // batch)
    orders = np.zeros((len(jobs), epochs, steps * batch), np.int32)
    masks = np.zeros((steps * batch,), np.float32)
    masks[:n] = 1.0
    for m, job in enumerate(jobs):
        seed = shuffle_seed(job.seed)
        for e in range(epochs):
            orders[m, e, :n] = epoch_permutation(seed, e, n)
    return {
        "x": data.x_train.astype(np.float32),
        "y": data.y_train[:, 0],
        "x_test": data.x_test.astype(np.float32),
        "y_test": data.y_test[:, 0],
        "x_val": None if data.n_val == 0 else data.x_val.astype(np.float32),
        "y_val": None if data.n_val == 0 else data.y_val[:, 0],
        "task": data.task.value,
        "activation": str(config.model.activation),
        "params": [
            np.stack([w[layer][part] for w in weights])
            for layer in range(len(sizes) - 1)
            for part in (0, 1)
        ],  # fmt: skip
        "coef": np.stack([coefficients(job.config) for job in jobs]).astype(np.float32),
        "orders": orders,
        "mask": masks.reshape(steps, batch),
        "lr": float(config.training.learning_rate),
        "batch": batch,
        "steps": steps,
        "n_train": n,
    }


def build(prep: dict, over_models: str = "vmap"):
    """A jitted function (params, coef, orders) -> history [M, epochs, 4 or 6] (float32), over
    the models as `over_models` says (OVER_MODELS)."""
    import jax
    import jax.numpy as jnp

    task, act_name = prep["task"], prep["activation"]
    act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[act_name]
    x, x_test, x_val = (None if a is None else jnp.asarray(a) for a in
                        (prep["x"], prep["x_test"], prep["x_val"]))  # fmt: skip
    dtype = jnp.float32 if task == "regression" else jnp.int32
    y, y_test, y_val = (None if a is None else jnp.asarray(a, dtype) for a in
                        (prep["y"], prep["y_test"], prep["y_val"]))  # fmt: skip
    mask = jnp.asarray(prep["mask"])
    used = (prep["coef"] != 0).any(axis=0)  # [hidden layers, 12]: a column some model uses
    lr, batch, steps = prep["lr"], prep["batch"], prep["steps"]

    def dense(h, kernel, bias):
        """h @ kernel + bias; with a few inputs as broadcast multiply-adds, which XLA's CPU
        backend runs ~10x faster than its batched dot of so short a sum (the tutorial's 2
        inputs: 189 against 1,930 us for 30 models' 70 x 500 z, one thread, Intel Xeon)."""
        if kernel.shape[0] > 8:
            return h @ kernel + bias
        z = bias
        for i in range(kernel.shape[0]):
            z = z + h[:, i, None] * kernel[i]
        return z

    def weighted_sum(values, weight):
        """sum over rows r and units u of weight[r] * values[r, u], as two matrix-vector
        products: XLA's CPU reductions over both axes took 2x as long (347 against 761 us)."""
        return weight @ (values @ jnp.ones(values.shape[1], values.dtype))

    def forward(params, coef, xb, weight):
        """(logits [rows, n_out], activity penalty of the rows weighted by `weight`)."""
        h, penalty = xb, 0.0
        count = jnp.sum(weight)
        layers = len(params) // 2 - 1
        for layer in range(layers):
            z = dense(h, params[2 * layer], params[2 * layer + 1])
            a = act(z)
            c = coef[layer]
            for side, v in ((4, z), (8, a)):  # before / after the activation
                # only the sums some model's penalty needs (the program is the models')
                if used[layer, [side, side + 2]].any():
                    l1 = weighted_sum(jnp.abs(v), weight)
                    penalty += c[side] * l1 / count + c[side + 2] * l1
                if used[layer, [side + 1, side + 3]].any():
                    l2 = weighted_sum(v * v, weight)
                    penalty += c[side + 1] * l2 / count + c[side + 3] * l2
            h = a
        return h @ params[-2] + params[-1], penalty

    def weight_penalty(params, coef):
        total = 0.0
        for layer in range(len(params) // 2 - 1):
            k, b, c = params[2 * layer], params[2 * layer + 1], coef[layer]
            for column, term in ((0, jnp.abs(k)), (1, k * k), (2, jnp.abs(b)), (3, b * b)):
                if used[layer, column]:
                    total += c[column] * jnp.sum(term)
        return total

    def data_loss(logits, yb):
        """(per-row loss, per-row metric: correct or absolute error)."""
        if task == "binary":
            z = logits[:, 0]
            t = yb.astype(jnp.float32)
            loss = jnp.maximum(z, 0) - z * t + jnp.log1p(jnp.exp(-jnp.abs(z)))
            return loss, ((z > 0).astype(jnp.int32) == yb).astype(jnp.float32)
        if task == "multiclass":
            logp = jax.nn.log_softmax(logits)
            loss = -jnp.take_along_axis(logp, yb[:, None], axis=1)[:, 0]
            return loss, (jnp.argmax(logits, axis=1) == yb).astype(jnp.float32)
        diff = yb - logits[:, 0]
        return diff * diff, jnp.abs(diff)

    def batch_loss(params, coef, xb, yb, weight):
        logits, activity = forward(params, coef, xb, weight)
        loss, metric = data_loss(logits, yb)
        count = jnp.sum(weight)
        total = jnp.sum(weight * loss) / count + weight_penalty(params, coef) + activity
        return total, jnp.sum(weight * metric)

    grad_fn = jax.value_and_grad(batch_loss, has_aux=True)

    def evaluate(params, coef, xs, ys):
        loss, metric = batch_loss(params, coef, xs, ys, jnp.ones(xs.shape[0], jnp.float32))
        return loss, metric / xs.shape[0]

    def train_one(params, coef, orders):
        zeros = [jnp.zeros_like(p) for p in params]
        state0 = (list(params), zeros, [jnp.zeros_like(p) for p in params], jnp.float32(0.0))

        def step(state, inputs):
            params, m, v, t = state
            rows, weight = inputs
            (loss, metric), grads = grad_fn(params, coef, x[rows], y[rows], weight)
            t = t + 1.0
            alpha = lr * jnp.sqrt(1.0 - BETA_2**t) / (1.0 - BETA_1**t)
            m = [mi + (g - mi) * (1.0 - BETA_1) for mi, g in zip(m, grads, strict=True)]
            v = [vi + (g * g - vi) * (1.0 - BETA_2) for vi, g in zip(v, grads, strict=True)]
            params = [p - (mi * alpha) / (jnp.sqrt(vi) + EPSILON)
                      for p, mi, vi in zip(params, m, v, strict=True)]  # fmt: skip
            size = jnp.sum(weight)
            return (params, m, v, t), (loss * size, metric)

        def epoch(state, order):
            state, (losses, metrics) = jax.lax.scan(
                step, state, (order.reshape(steps, batch), mask)
            )
            n = prep["n_train"]
            row = [jnp.sum(losses) / n, jnp.sum(metrics) / n]
            row += list(evaluate(state[0], coef, x_test, y_test))
            if x_val is not None:
                row += list(evaluate(state[0], coef, x_val, y_val))
            return state, jnp.stack(row)

        _, history = jax.lax.scan(epoch, state0, orders)
        return history

    if over_models == "map":
        return jax.jit(lambda p, c, o: jax.lax.map(lambda args: train_one(*args), (p, c, o)))
    return jax.jit(jax.vmap(train_one))


def train(prep: dict, fn=None) -> np.ndarray:
    """History [M, epochs, 4 or 6] of the prepared models (`fn`: `build(prep)`, reused)."""
    fn = build(prep) if fn is None else fn
    out = fn(prep["params"], prep["coef"], prep["orders"])
    return np.asarray(out.block_until_ready())


def check(jobs: list, epochs: int, history: np.ndarray) -> float:
    """The largest difference between these histories and the cpu engine's for the same jobs,
    relative to each column's scale (losses and metrics agree to float rounding amplified by
    training: a few 1e-6 after a few epochs)."""
    from actreg_cli.engines.cpu.engine import CpuEngine

    results = CpuEngine().train(jobs)
    cpu = np.stack([r.history for r in results])
    assert cpu.shape == history.shape, (cpu.shape, history.shape)
    return float(np.max(np.abs(cpu - history) / np.maximum(1.0, np.abs(cpu))))
