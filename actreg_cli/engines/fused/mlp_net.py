"""The traced code of the fused engine's MLP program (engines/fused/mlp.py): `Spec`, what shapes
a compiled program, and `Net`, the forward pass, hand-written backward pass and optimizer step
of C stacked MLPs (layout: the docstring of engines/fused/mlp.py).

The backward pass is written by hand. It follows the gradient TensorFlow registers for each
forward op (ReluGrad/TanhGrad/SigmoidGrad/EluGrad from the activation's output, Abs -> sign,
Square -> 2x, the composite sigmoid_cross_entropy_with_logits, softmax - onehot of the sparse
softmax cross-entropy kernel, -2 (y - l) of the squared error), so it equals GradientTape to
float rounding (tests/test_engines_fused_mlp.py checks both), in fewer kernels than autodiff's graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from actreg_cli.engines.fused.common import (
    MIN_SEGMENTS,
    SEGMENT_WORK,
    epoch_order,
    optimizer_step,
    tensorflow,
)
from actreg_cli.tasks import Task

#: A contraction over at most this many inputs is written as broadcast multiply-adds (fused with
#: the bias and activation) instead of a matmul; the tutorial's first layer has 2 inputs.
_SMALL_FAN_IN = 4


@dataclass(frozen=True)
class Spec:
    """Everything that shapes a compiled program; programs are cached by it."""

    hidden_units: tuple[int, ...]
    n_features: int  # inputs of the first layer
    task: Task  # the output layer and loss (tasks.py)
    n_outputs: int  # output units: K classes (multiclass) or 1
    activation: str
    optimizer: str
    epochs: int
    n_train: int
    n_test: int
    n_val: int  # validation rows (0: no validation set, and no validation code in the program)
    batch_size: int  # min(config batch size, n_train)
    shuffle: bool  # False when one batch holds every sample (order is then irrelevant)
    chunk: int  # models per call
    weight_terms: tuple[tuple[bool, bool], ...]  # per hidden layer: any kernel/bias (L1, L2)
    activity_terms: tuple[tuple[int, str, str], ...]  # (layer, before|after, l1|l2) in use
    early_stopping: bool = False  # the models are watched (common.watch_epoch)

    @property
    def minibatch(self) -> bool:
        return self.batch_size < self.n_train

    @property
    def fan_ins(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden_units[:-1])

    @property
    def loop_epochs(self) -> int:
        """Iterations of the training loop: full-batch training runs one more, which only
        evaluates the final weights (its update is masked off)."""
        return self.epochs if self.minibatch else self.epochs + 1

    def segment_epochs(self) -> int:
        """Loop iterations per compiled call (see SEGMENT_WORK)."""
        work = self.chunk * sum(self.hidden_units) * (self.n_train + self.n_test + self.n_val)
        by_work = math.ceil(SEGMENT_WORK / max(work, 1))
        return max(1, min(math.ceil(self.loop_epochs / MIN_SEGMENTS), by_work))

    def block_rows(self, layer: int) -> int:
        """Rows of hidden layer `layer`'s parameter block: kernel, bias (and output kernel)."""
        last = layer == len(self.hidden_units) - 1
        return self.fan_ins[layer] + 1 + (self.n_outputs if last else 0)


class Net:
    """Forward, hand-written backward and optimizer step of C stacked MLPs (code being traced).

    params = [block_0, ..., block_{L-1}, out_bias] as laid out in engines/fused/mlp.py.
    Sums over long axes are written as dot products (einsum): XLA:CPU runs a dot as a tuned
    matmul with its elementwise producer fused in, while it splits a long fused reduction into a
    reduce-window plus a reduce whose operand is written out to memory first, several times
    slower here (measured while building this engine).
    """

    def __init__(self, spec: Spec):
        self.tf = tensorflow()
        self.spec = spec
        self.n_layers = len(spec.hidden_units)

    def bind(self, row_l1, row_l2, act_mean, act_sum, lr):
        """The per-model factor tensors of the call being traced."""
        self.row_l1, self.row_l2 = list(row_l1), list(row_l2)
        self.act_mean, self.act_sum, self.lr = act_mean, act_sum, lr

    # -- forward ---------------------------------------------------------------------------
    def _dense(self, a, block, layer):
        """Pre-activation z [C, R, o] = a @ kernel + bias; a is [R, i] or [C, R, i]."""
        tf = self.tf
        fan_in = self.spec.fan_ins[layer]
        kernel, bias = block[:, :fan_in, :], block[:, fan_in, :]
        if fan_in <= _SMALL_FAN_IN:
            # A 2-wide contraction is two multiply-adds: broadcast, they fuse into the loops
            # that consume z instead of a tiny-K matmul whose output must be written out.
            acc = None
            for j in range(fan_in):
                col = a[None, :, j, None] if a.shape.rank == 2 else a[:, :, j, None]
                term = col * kernel[:, None, j, :]
                acc = term if acc is None else acc + term
            return acc + bias[:, None, :]
        eq = "ri,cio->cro" if a.shape.rank == 2 else "cri,cio->cro"
        return tf.einsum(eq, a, kernel) + bias[:, None, :]

    def _activation(self, z):
        tf = self.tf
        name = self.spec.activation
        if name == "relu":
            return tf.nn.relu(z)
        if name == "tanh":
            return tf.tanh(z)
        if name == "sigmoid":
            return tf.sigmoid(z)
        return tf.nn.elu(z)

    def forward(self, params, x):
        """Logits [C, R] (one output) or [C, R, K] (multiclass), per-row activity sums [C, R, T]
        (or None), hidden (z, a) per layer.

        act_rows[:, r, t] is the sum over units of |v| (l1) or v**2 (l2) for activity term t of
        spec.activity_terms, v the layer's output before or after its activation.
        """
        tf = self.tf
        a = x
        cache = []
        act_rows = []
        last = self.n_layers - 1
        for layer in range(self.n_layers):
            z = self._dense(a, params[layer], layer)
            a = self._activation(z)
            cache.append((z, a))
            pieces = []
            single = self.spec.n_outputs == 1
            if layer == last and single:
                # a . w_out as (a * w_out) . ones: a dot with a shared vector fuses its
                # elementwise operand; a per-model (batched) dot would write `a` out first.
                pieces.append(a * params[layer][:, self.spec.fan_ins[layer] + 1, None, :])
            elif layer == last:  # K outputs: logits [C, R, K]
                w_out = params[layer][:, self.spec.fan_ins[layer] + 1 :, :]  # [C, K, o]
                logits = tf.einsum("cru,cku->crk", a, w_out) + params[-1][:, None, :]
            for term_layer, side, norm in self.spec.activity_terms:
                if term_layer == layer:
                    value = z if side == "before" else a
                    pieces.append(tf.abs(value) if norm == "l1" else tf.square(value))
            if not pieces:
                continue
            ones = tf.ones([z.shape[-1]], tf.float32)
            sums = [tf.einsum("cru,u->cr", piece, ones) for piece in pieces]
            if layer == last and single:
                logits = sums.pop(0) + params[-1]
            act_rows += sums
        return logits, (tf.stack(act_rows, axis=2) if act_rows else None), cache

    def weight_penalty(self, params):
        """Kernel and bias penalties of every model, [C] (None when the group has none)."""
        tf = self.tf
        total = None
        for layer, (has_l1, has_l2) in enumerate(self.spec.weight_terms):
            block = params[layer]
            for used, factors, fn in (
                (has_l1, self.row_l1, tf.abs),
                (has_l2, self.row_l2, tf.square),
            ):
                if used:
                    # sum_r factor_r * sum_u f(block[r, u]): kernel rows carry the kernel factor,
                    # the bias row the bias factor, the output-kernel row 0.
                    per_row = tf.einsum("cru,u->cr", fn(block), tf.ones([block.shape[-1]]))
                    term = tf.reduce_sum(factors[layer][:, :, 0] * per_row, axis=1)
                    total = term if total is None else total + term
        return total

    def outputs(self, logits):
        """The output layer's activation of the logits, [C, R, K]: what Keras's model returns."""
        tf = self.tf
        if self.spec.task is Task.binary:
            return tf.sigmoid(logits)[:, :, None]
        if self.spec.task is Task.multiclass:
            return tf.nn.softmax(logits, axis=-1)
        return logits[:, :, None]

    def _softmax_parts(self, logits, y):
        """(shifted logits, log-sum-exp of them, one-hot labels) as TF's sparse softmax
        cross-entropy kernel computes them: logits minus their max over the classes."""
        tf = self.tf
        shifted = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
        lse = tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1))
        onehot = tf.one_hot(tf.cast(y, tf.int32), self.spec.n_outputs, dtype=tf.float32)
        return shifted, lse, onehot

    def per_row(self, logits, y):
        """Per-row data loss and metric, each [C, R]: the task's loss (before the batch mean)
        and the correct prediction (1/0) or the absolute error (regression)."""
        tf = self.tf
        task = self.spec.task
        if task is Task.regression:  # mean_squared_error; metric mae
            diff = y - logits
            return tf.square(diff), tf.abs(diff)
        if task is Task.multiclass:  # sparse_softmax_cross_entropy_with_logits; argmax accuracy
            shifted, lse, onehot = self._softmax_parts(logits, y)
            loss = lse - tf.reduce_sum(onehot * shifted, axis=-1)
            pred = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.float32)
            return loss, tf.cast(tf.equal(pred, y), tf.float32)
        cond = logits >= 0.0
        loss = (tf.where(cond, logits, 0.0) - logits * y) + tf.math.log1p(
            tf.exp(tf.where(cond, -logits, logits))
        )
        pred = tf.cast(tf.sigmoid(logits) > 0.5, tf.float32)  # BinaryAccuracy, threshold 0.5
        return loss, tf.cast(tf.equal(pred, y), tf.float32)

    def summaries(self, logits, act_rows, y, row_sets, weight_penalty):
        """Keras's metric inputs for each row set (start, size) taken as one batch: [C, 2*S].

        Per set: loss * size (Keras's loss tracker weights a batch loss by the batch size) and
        the metric total (correct count, or sum of absolute errors), where loss = mean of the
        per-row data loss (`per_row`) + kernel/bias penalties + activity penalties (batch_mean
        factors * sum / size + batch_sum factors * sum).
        """
        tf = self.tf
        per_row, correct = self.per_row(logits, y)
        columns = [per_row, correct] + ([] if act_rows is None else [act_rows])
        stats = tf.concat([col if col.shape.rank == 3 else col[:, :, None] for col in columns], 2)
        # Sums over each row set: reductions (not a matmul with an indicator matrix, whose
        # rounding depended on a model's position in the chunk).
        sums = tf.stack(
            [tf.reduce_sum(stats[:, start : start + size], axis=1) for start, size in row_sets],
            axis=1,
        )  # [C, S, 2 + K]
        out = []
        for j, (_, size) in enumerate(row_sets):
            loss = sums[:, j, 0] / float(size)
            if weight_penalty is not None:
                loss = loss + weight_penalty
            if act_rows is not None:
                act = sums[:, j, 2:]
                # A factor of 0 keeps its term exactly 0 even if a sum overflowed (0 * inf =
                # NaN would poison a model that does not use this penalty).
                mean_terms = tf.where(self.act_mean != 0.0, self.act_mean * act, 0.0)
                sum_terms = tf.where(self.act_sum != 0.0, self.act_sum * act, 0.0)
                loss = (loss + tf.reduce_sum(mean_terms, axis=1) / float(size)) + tf.reduce_sum(
                    sum_terms, axis=1
                )
            out += [loss * float(size), sums[:, j, 1]]
        return tf.stack(out, axis=1)

    # -- backward --------------------------------------------------------------------------
    def logit_grad(self, logits, y):
        """d mean(data loss) / d logits, shaped like logits.

        binary: TF's sigmoid_cross_entropy_with_logits, relu(l) - l*y + log1p(exp(-|l|)), and
        the gradients of where, exp and log1p; multiclass: softmax - onehot (the gradient TF's
        sparse softmax cross-entropy kernel returns); regression: the gradient of
        mean(square(y - l)), -2 (y - l).
        """
        tf = self.tf
        upstream = 1.0 / float(logits.shape[1])
        if self.spec.task is Task.regression:
            return -(upstream * (2.0 * (y - logits)))
        if self.spec.task is Task.multiclass:
            shifted, lse, onehot = self._softmax_parts(logits, y)
            e = tf.exp(shifted)
            softmax = e / tf.reduce_sum(e, axis=-1, keepdims=True)
            return upstream * (softmax - onehot)
        cond = logits >= 0.0
        e = tf.exp(tf.where(cond, -logits, logits))
        g_log = (upstream * (1.0 / (1.0 + e))) * e
        return (tf.where(cond, upstream, 0.0) - upstream * y) + tf.where(cond, -g_log, g_log)

    def _add_activity_grads(self, g, value, layer, side, rows):
        """g + d(activity penalties on `value`)/d value; factor = batch_mean / R + batch_sum."""
        tf = self.tf
        for norm in ("l1", "l2"):
            if (layer, side, norm) in self.spec.activity_terms:
                k = self.spec.activity_terms.index((layer, side, norm))
                factor = (self.act_mean[:, k] / rows + self.act_sum[:, k])[:, None, None]
                g = g + factor * (tf.sign(value) if norm == "l1" else 2.0 * value)
        return g

    def _activation_grad(self, g, a):
        """dL/dz from dL/da, computed from the output a as TF's gradient kernels do."""
        tf = self.tf
        name = self.spec.activation
        if name == "relu":  # ReluGrad: g where a > 0
            return tf.where(a > 0.0, g, 0.0)
        if name == "tanh":  # TanhGrad: g * (1 - a^2)
            return g * (1.0 - a * a)
        if name == "sigmoid":  # SigmoidGrad: g * a * (1 - a)
            return g * (a * (1.0 - a))
        return tf.where(a < 0.0, g * (a + 1.0), g)  # EluGrad

    def backward(self, params, x, cache, g_logits):
        """Gradients of one batch's loss w.r.t. params (same layout): data and penalty terms.

        x: the batch's inputs [R, F] or [C, R, F], cache: its (z, a) per hidden layer,
        g_logits: [C, R] (or [C, R, K]) from logit_grad.
        """
        tf = self.tf
        spec = self.spec
        rows = float(g_logits.shape[1])
        last = self.n_layers - 1
        grads = [None] * len(params)
        single = spec.n_outputs == 1
        if single:
            grads[-1] = tf.reduce_sum(g_logits, axis=1, keepdims=True)
            w_out = params[last][:, spec.fan_ins[last] + 1, :]
            g_a = g_logits[:, :, None] * w_out[:, None, :]
        else:  # g_logits [C, R, K], output kernel rows [C, K, o]
            grads[-1] = tf.reduce_sum(g_logits, axis=1)
            w_out = params[last][:, spec.fan_ins[last] + 1 :, :]
            g_a = tf.einsum("crk,cko->cro", g_logits, w_out)
        for layer in reversed(range(self.n_layers)):
            z, a = cache[layer]
            fan_in = spec.fan_ins[layer]
            block = params[layer]
            g_a = self._add_activity_grads(g_a, a, layer, "after", rows)
            g_z = self._activation_grad(g_a, a)
            g_z = self._add_activity_grads(g_z, z, layer, "before", rows)
            a_prev = x if layer == 0 else cache[layer - 1][1]
            # Kernel rows and bias row in one batched matmul, [a_prev, 1]^T g_z over the batch
            # rows (batched per model even when a_prev is shared: XLA then keeps g_z in its
            # natural layout instead of transposing it for one big matmul, 3x slower here).
            inputs = tf.concat([a_prev, tf.ones(a_prev.shape[:-1] + [1], tf.float32)], axis=-1)
            if inputs.shape.rank == 2:
                inputs = tf.broadcast_to(inputs[None], [g_z.shape[0], *inputs.shape])
            grad = tf.einsum("crk,cro->cko", inputs, g_z)
            if layer == last and single:
                g_out = tf.einsum("cr,cro->co", g_logits, a)
                grad = tf.concat([grad, g_out[:, None, :]], axis=1)
            elif layer == last:
                grad = tf.concat([grad, tf.einsum("crk,cro->cko", g_logits, a)], axis=1)
            has_l1, has_l2 = spec.weight_terms[layer]
            if has_l1:
                grad = grad + self.row_l1[layer] * tf.sign(block)
            if has_l2:
                grad = grad + self.row_l2[layer] * (2.0 * block)
            grads[layer] = grad
            if layer > 0:
                g_a = tf.einsum("cro,cio->cri", g_z, block[:, :fan_in, :])
        return grads

    # -- optimizer -------------------------------------------------------------------------
    def update(self, state, grads, step, active=None):
        """One Keras Adam (or SGD) step of every parameter (`optimizer_step`)."""
        return optimizer_step(self.spec.optimizer, state, grads, step, self.lr, active)

    # -- minibatches -----------------------------------------------------------------------
    def minibatch_epoch(self, epoch, state, x_train, y_train, seeds):
        """One epoch of minibatch steps; returns the state and the [C, 2] train row.

        Each model visits the training rows in epoch `epoch` in the order
        `weights.epoch_permutation(shuffle_seed(model seed), epoch, n)` (computed in the
        program by `epoch_order`), the order the Keras engine feeds `fit`: a model's batches do
        not depend on what else is in its chunk. Full batches run in a while_loop; the last
        partial batch (kept, as Keras does) is one more, statically shaped, step.
        """
        tf = self.tf
        spec = self.spec
        n, bs, c = spec.n_train, spec.batch_size, spec.chunk
        n_full, rest = divmod(n, bs)
        if spec.shuffle:
            order = epoch_order(seeds, epoch, n)
        else:
            order = tf.tile(tf.range(n)[None, :], [c, 1])
        first_step = epoch * (n_full + (1 if rest else 0))

        def step(state, idx, t):
            xb = tf.gather(x_train, idx)  # [C, b, F]
            yb = tf.gather(y_train, idx)  # [C, b]
            params = [s[:, 0] for s in state]
            logits, act_rows, cache = self.forward(params, xb)
            size = idx.shape[1]
            row = self.summaries(logits, act_rows, yb, ((0, size),), self.weight_penalty(params))
            grads = self.backward(params, xb, cache, self.logit_grad(logits, yb))
            return self.update(state, grads, t), row

        def body(j, state, total):
            idx = tf.slice(order, [0, j * bs], [c, bs])
            state, row = step(state, idx, first_step + j + 1)
            return j + 1, state, total + row

        _, state, total = tf.while_loop(
            lambda j, *_: j < n_full,
            body,
            (tf.constant(0), state, tf.zeros([c, 2], tf.float32)),
            maximum_iterations=n_full,
        )
        if rest:
            state, row = step(state, order[:, n_full * bs :], first_step + n_full + 1)
            total = total + row
        return state, total
