"""Where the cpu engine's MLP loop spends a model-epoch: each pass over a block of 16 rows, and
the epoch's parts, on one of bench_cpu_mlp.py's shapes.

One model of the shape (--model: its index in bench_cpu_mlp's 30-model mix; 0 is an L1
activity penalty before the activation), one thread, the compiled passes of general_loop.py
and blocks.py called on a full block of the first training batch, each in a compiled loop of
many calls (process CPU time a call: the pass on data already in cache, as the loop runs it):

  gather, dense forward (every hidden layer's z = x @ kernel + bias; with ReLU also a, stored
  from the same registers), activation (other activations than ReLU), output
  forward, loss, activity sums, output backward, dL/dz (blocks.grad_z), kernel gradients,
  input gradients (dL/da of the layers after the first)

with the FLOPs bench_cpu_mlp.py counts for the products and their GFLOP/s, next to the
single-thread sgemm rate measured in the same run (the FLOP bound's rate). Then the epoch's
parts, each a compiled loop of whole epochs' worth: the training batches (forward and
backward), the optimizer steps (penalties, Adam or SGD), the test rows' evaluation (a
validation set's costs the same a row), and the epoch's minibatch order. Indicative: the
passes run on warm caches and without the loop around them.

Run:   python3 benchmarks/bench_cpu_blocks.py --shape breast_cancer [--model 1]
       (~1 minute on 2 cores, the passes' compile included)
Shapes: those of bench_cpu_mlp.py but the tutorial (which has a loop of its own).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

PASSES = (
    "gather",
    "dense forward",
    "activation",
    "output forward",
    "loss",
    "activity sums",
    "output backward",
    "dL/dz",
    "kernel gradients",
    "input gradients",
)
EPOCH_PARTS = ("training batches", "optimizer steps", "test rows", "epoch order")


def compiled_parts():
    """(passes, epoch): Numba functions that run pass or part `which` `reps` times."""
    import numpy as np
    from numba import njit

    from actreg_cli.engines.cpu import general_loop as g
    from actreg_cli.engines.cpu.blocks import (
        dense_forward,
        dense_relu_forward,
        grad_z,
        input_grad,
        kernel_grad,
        output_backward,
        output_forward,
        transpose_kernels,
        transpose_output,
    )
    from actreg_cli.engines.cpu.step import epoch_order, update_penalized

    @njit
    def layer_input(layer, xb, ab, h_off):
        """(the block's inputs of hidden layer `layer`: xb or the last layer's a, their offset)."""
        if layer == 0:
            return xb, 0
        return ab, g.BLOCK * h_off[layer - 1]

    @njit
    def passes(which, reps, p, x, y, coef, net, batch_size):
        units, fan_ins, w_off, b_off = net.units, net.fan_ins, net.w_off, net.b_off
        h_off = net.h_off
        n_layers = units.shape[0]
        xb, zb, ab, db, gb, logits, g_logits, scratch, wt = g.mlp_buffers(net)
        act_sums = np.zeros((n_layers, 4), np.float32)
        factors = np.zeros((n_layers, 4), np.float32)
        grad = np.zeros_like(p)
        rows = np.arange(y.shape[0])
        nb = g.BLOCK
        last = n_layers - 1
        h_last = g.BLOCK * h_off[last]
        upstream = np.float32(1.0) / np.float32(batch_size)
        g._gather(x, rows, 0, nb, nb, fan_ins[0], xb)
        g.forward_block(p, xb, nb, units, fan_ins, w_off, b_off, h_off, zb, ab, db, net.act,
                        coef)  # fmt: skip
        transpose_kernels(p, wt, units, fan_ins, w_off)
        transpose_output(p, wt, units[last], net.out_w, net.n_out)  # (once a batch)
        output_forward(p, ab, h_last, units[last], net.out_w, net.out_b, net.n_out, logits, nb,
                       wt)  # fmt: skip
        g.activity_factors(coef, np.float32(batch_size), factors)
        total = 0.0
        for r in range(reps):
            if which == 0:
                g._gather(x, rows, 0, nb, nb, fan_ins[0], xb)
            elif which == 1:
                for layer in range(n_layers):
                    src, s_base = layer_input(layer, xb, ab, h_off)
                    if net.act == 0:  # relu's a written by the product (as the loop runs it)
                        dense_relu_forward(p, src, s_base, fan_ins[layer], w_off[layer],
                                           b_off[layer], units[layer], zb, ab,
                                           g.BLOCK * h_off[layer], nb,
                                           g.reads_z(coef, layer))  # fmt: skip
                        continue
                    dense_forward(p, src, s_base, fan_ins[layer], w_off[layer], b_off[layer],
                                  units[layer], zb, g.BLOCK * h_off[layer], nb)  # fmt: skip
            elif which == 2 and net.act != 0:  # (relu's: in the forward's stores)
                for layer in range(n_layers):
                    g.activate(zb, ab, db, g.BLOCK * h_off[layer], nb * units[layer], net.act)
            elif which == 3:
                output_forward(p, ab, h_last, units[last], net.out_w, net.out_b, net.n_out,
                               logits, nb, wt)  # fmt: skip
            elif which == 4:
                loss, _ = g.block_loss(net.task, logits, y, rows, 0, nb, net.n_out, upstream,
                                       scratch, g_logits, True, 0.0, 0.0)  # fmt: skip
                total += loss
            elif which == 5:
                for layer in range(n_layers):
                    h = g.BLOCK * h_off[layer]
                    g.activity_sums(zb, ab, h, nb * units[layer], coef, layer, act_sums)
            elif which == 6:
                output_backward(p, grad, ab, gb, h_last, units[last], net.out_w, net.out_b,
                                net.n_out, g_logits, nb)  # fmt: skip
            elif which == 7:
                for layer in range(last, -1, -1):
                    f = factors[layer]
                    o = units[layer]
                    grad_z(zb, ab, db, gb, g.BLOCK * h_off[layer], nb * o, nb * o, f[2], f[3],
                           f[0], f[1], net.act)  # fmt: skip
            elif which == 8:
                for layer in range(n_layers):
                    src, s_base = layer_input(layer, xb, ab, h_off)
                    kernel_grad(grad, src, s_base, fan_ins[layer], w_off[layer], b_off[layer],
                                units[layer], gb, g.BLOCK * h_off[layer], nb)  # fmt: skip
            elif which == 9:
                for layer in range(1, n_layers):
                    input_grad(wt, w_off[layer], fan_ins[layer], units[layer], gb,
                               g.BLOCK * h_off[layer], g.BLOCK * h_off[layer - 1], nb)  # fmt: skip
            total += zb[r % nb]
        return total

    @njit
    def epoch(which, reps, p, x, y, xt, yt, coef, net, batch_size, optimizer):
        n_layers = net.units.shape[0]
        buffers = g.mlp_buffers(net)
        act_sums = np.zeros((n_layers, 4), np.float32)
        factors = np.zeros((n_layers, 4), np.float32)
        grad = np.zeros_like(p)
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        n = y.shape[0]
        rows = np.arange(n)
        test_rows = np.arange(yt.shape[0])
        order = np.empty(n, np.int64)
        keys = np.empty(n, np.int64)
        starts = np.empty(n + 1, np.int64)
        empty = np.zeros(0, np.float32)
        total = 0.0
        for r in range(reps):
            if which == 0:
                for k in range(0, n, batch_size):
                    batch = rows[k : min(k + batch_size, n)]
                    loss, _ = g.mlp_batch(net, p, grad, x, empty, y, batch, True, coef, buffers,
                                          act_sums, factors, np.float32(0.0), True)  # fmt: skip
                    total += loss
            elif which == 1:
                for _ in range(0, n, batch_size):  # steps of ~1e-12: p stays as it is
                    total += update_penalized(
                        p, m, v, grad, 1 + r, np.float32(1e-12), optimizer, coef, net.units,
                        net.fan_ins, net.w_off, net.b_off,
                    )  # fmt: skip
            elif which == 2:
                loss, _ = g.mlp_batch(net, p, grad, xt, empty, yt, test_rows, True, coef, buffers,
                                      act_sums, factors, np.float32(0.0), False)  # fmt: skip
                total += loss
            else:
                epoch_order(7, r, n, order, keys, starts)
                total += order[0]
        return total

    return passes, epoch


def model_of(shape: str, index: int):
    """(arguments shared by the passes and epoch parts, batch size, the model's layout)."""
    import bench_cpu_mlp
    import numpy as np

    from actreg_cli.data import job_dataset
    from actreg_cli.engines.cpu.codes import ACTIVATIONS, OPTIMIZERS, TASKS
    from actreg_cli.engines.cpu.engine import flat_initial_weights
    from actreg_cli.engines.cpu.general_loop import MlpNet
    from actreg_cli.engines.penalties import coefficients
    from actreg_cli.tasks import output_units

    job = bench_cpu_mlp.jobs_of(shape, 1)[index]
    config = job.config
    data = job_dataset(config, job.seed)
    units = np.array(config.model.hidden_units, np.int64)
    fan_ins = np.array([data.n_features, *units[:-1]], np.int64)
    sizes = fan_ins * units + units  # kernel then bias, per layer
    w_off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    b_off = w_off + fan_ins * units
    h_off = np.concatenate([[0], np.cumsum(units)]).astype(np.int64)
    n_out = output_units(data.task, data.n_classes)
    out_w = np.int64(sizes.sum())
    net = MlpNet(units, fan_ins, w_off, b_off, h_off, out_w, out_w + n_out * units[-1],
                 np.int64(n_out), np.int64(TASKS[data.task.value]),
                 np.int64(ACTIVATIONS[config.model.activation]))  # fmt: skip
    flat = lambda a: np.ascontiguousarray(a, np.float32).ravel()  # noqa: E731
    p = flat_initial_weights(config, job.seed, data).astype(np.float32)
    coef = coefficients(config).astype(np.float32)
    x, y = flat(data.x_train), np.ascontiguousarray(data.y_train[:, 0], np.float32)
    xt, yt = flat(data.x_test), np.ascontiguousarray(data.y_test[:, 0], np.float32)
    batch = min(config.training.batch_size, data.n_train)
    optimizer = np.int64(OPTIMIZERS[config.training.optimizer])
    return (p, x, y, xt, yt, coef, net), batch, optimizer, config, data


def pass_flops(net, which: int) -> int:
    """FLOPs of a product pass on a block (multiply-add = 2), as bench_cpu_mlp.py counts them;
    0 for the others."""
    from actreg_cli.engines.cpu.general_loop import BLOCK

    units, fan_ins = list(net.units), list(net.fan_ins)
    products = {
        1: sum(2 * i * o for i, o in zip(fan_ins, units, strict=True)),
        3: 2 * units[-1] * int(net.n_out),
        6: 4 * units[-1] * int(net.n_out),
        8: sum(2 * i * o for i, o in zip(fan_ins, units, strict=True)),
        9: sum(2 * i * o for i, o in zip(fan_ins[1:], units[1:], strict=True)),
    }
    return BLOCK * products.get(which, 0)


def timed(function, *args, target_s: float = 0.3) -> float:
    """Process CPU seconds a repetition of function(which..., reps, ...) (args[1] is reps)."""
    which, _, *rest = args
    function(which, 2, *rest)
    reps = 2
    while True:
        start = time.process_time()
        function(which, reps, *rest)
        spent = time.process_time() - start
        if spent > target_s:
            return spent / reps
        reps *= 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="breast_cancer", help="a bench_cpu_mlp.py shape")
    parser.add_argument("--model", type=int, default=0, help="its index in the 30-model mix")
    parser.add_argument("--worker", choices=["sgemm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    from bench_cpu_kernel import sgemm_worker, worker_process

    if args.worker == "sgemm":
        import json

        print(json.dumps(sgemm_worker(args)))
        return
    import os

    os.environ["NUMBA_NUM_THREADS"] = "1"
    if args.shape == "tutorial":
        sys.exit("the tutorial family has a loop of its own (bench_cpu_kernel.py)")
    from actreg_cli.versions import machine_info

    gflops = worker_process(__file__, "sgemm", [])["gflops"]
    shared, batch, optimizer, config, data = model_of(args.shape, args.model)
    net = shared[-1]
    (p, x, y, xt, yt, coef, _) = shared
    passes, epoch = compiled_parts()
    print(f"# cpu engine MLP loop, {args.shape} model {args.model}: {config.model.hidden_units} "
          f"{config.model.activation}, {data.n_train} train rows, batch {batch}; "
          f"{machine_info()['cpu']}")  # fmt: skip
    print(f"FLOP rate: {gflops:.0f} GFLOP/s (float32 matmul, one thread, measured now)\n")
    print("| pass on a block of 16 rows | ns CPU | share | kFLOP | GFLOP/s |")
    print("|---|---:|---:|---:|---:|")
    times = [timed(passes, i, 0, p, x, y, coef, net, batch) * 1e9 for i in range(len(PASSES))]
    for i, (name, ns) in enumerate(zip(PASSES, times, strict=True)):
        flops = pass_flops(net, i)
        rate = f"{flops / ns:.0f}" if flops else ""
        kflop = f"{flops / 1e3:.0f}" if flops else ""
        print(f"| {name} | {ns:,.0f} | {ns / sum(times):.0%} | {kflop} | {rate} |")
    print(f"| all | {sum(times):,.0f} | | | |\n")
    print("| part of an epoch | µs CPU |")
    print("|---|---:|")
    for i, name in enumerate(EPOCH_PARTS):
        us = timed(epoch, i, 0, p, x, y, xt, yt, coef, net, batch, optimizer) * 1e6
        print(f"| {name} | {us:,.1f} |")


if __name__ == "__main__":
    main()
