"""The traced code of the fused engine's layer-list program (engines/fused/layers.py):
`LayersSpec`, what shapes a compiled program, and `LayersNet`, the forward pass and loss of C
stacked models of one plan (the compiled program takes their gradients with GradientTape).

Layers: dense (einsum), conv2d (im2col: the kh*kw shifted strided slices of the padded input,
'same' padding split as TensorFlow does, less on top/left, then one einsum with the kernel
reshaped to [kh*kw*in, filters]), max_pool2d (windows that tile the input as a reshape and a
max, `_tiled_max_pool`; others tf.nn.max_pool2d, TensorFlow's padding), flatten
(row-major, as Keras's channels_last Flatten), lstm (Keras's LSTMCell: z = x W + h U + b, gates
i, f, c, o, c = f c + i tanh(z_c), h = o tanh(c), last h or every h), dropout, activation. The
output layer is the task's (tasks.py) and the data loss is computed from its pre-activation
values (Keras's logits path): sigmoid and softmax cross-entropy with logits, mean squared error
(over the features for reconstruction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from actreg_cli.engines.fused.common import MIN_SEGMENTS, splitmix64, tensorflow
from actreg_cli.engines.penalties import COEF_INDEX
from actreg_cli.models.plan import KERNEL_KINDS, LayerPlan
from actreg_cli.tasks import Task, spec
from actreg_cli.weights import SPLITMIX_GAMMA

#: A dropout layer's rate in a program's layers where it drops: each model's own rate comes in
#: its dropout table (layers.dropout_table), so that a sweep's rates share one program.
PER_MODEL_RATE = -1.0

#: The columns of `LayersNet._activity_sums`: (placement side, norm).
_ACTIVITY_SUMS = (("before", "l1"), ("before", "l2"), ("after", "l1"), ("after", "l2"))


@dataclass(frozen=True)
class LayersSpec:
    """Everything that shapes a compiled program; programs are cached by it.

    layers: the plan's layers without their penalties (those are per-model factors).
    """

    layers: tuple[LayerPlan, ...]
    input_shape: tuple[int, ...]
    task: Task
    probe: int
    optimizer: str
    epochs: int
    n_train: int
    n_test: int
    n_val: int  # validation rows (0: no validation set, and no validation code in a program)
    batch_size: int  # min(config batch size, n_train)
    shuffle: bool  # False when one batch holds every sample
    chunk: int
    eval_block: int = 16  # test rows evaluated at a time (`LayersNet.evaluate`)
    early_stopping: bool = False  # the models are watched (common.watch_epoch)
    #: Per kernel layer, which of the four `_ACTIVITY_SUMS` some model of the program penalizes
    #: (`activity_sums_used`); the others are never computed. None: all four of every layer.
    activity_used: tuple[tuple[bool, ...], ...] | None = None

    @property
    def n_dropout(self) -> int:
        """Dropout layers that drop (a rate per model: a dropout table's rows)."""
        return sum(
            layer.kind == "dropout" and dict(layer.options)["rate"] == PER_MODEL_RATE
            for layer in self.layers
        )

    @property
    def kernel_layers(self) -> tuple[int, ...]:
        """Indices of the layers with a kernel (rows of the factor table)."""
        return tuple(k for k, layer in enumerate(self.layers) if layer.kind in KERNEL_KINDS)

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].output_shape[0]

    @property
    def y_width(self) -> int:
        """Columns of y: the features for reconstruction, else 1."""
        return self.n_outputs if self.task is Task.reconstruction else 1

    def segment_epochs(self) -> int:
        """Epochs per compiled call: a tenth of them (progress and Ctrl-C between calls)."""
        return max(1, math.ceil(self.epochs / MIN_SEGMENTS))


def activity_sums_used(tables: list[np.ndarray]) -> tuple[tuple[bool, ...], ...]:
    """Per kernel layer, whether each of `_ACTIVITY_SUMS` has a non-zero factor (batch_mean or
    batch_sum) in any of the models' penalty tables (each [kernel layers, COEF_COLUMNS]): a sum
    no model penalizes only adds zero to every loss. Leaving them out: 17% less CPU on the
    Conv2D study's compiled call (`benchmarks/bench_layers.py --all-sums`)."""
    stacked = np.stack(tables)  # [models, kernel layers, COEF_COLUMNS]
    return tuple(
        tuple(
            bool(np.any(stacked[:, row, COEF_INDEX[f"{side}_mean_{norm}"]] != 0)
                 or np.any(stacked[:, row, COEF_INDEX[f"{side}_sum_{norm}"]] != 0))
            for side, norm in _ACTIVITY_SUMS
        )
        for row in range(stacked.shape[1])
    )  # fmt: skip


class LayersNet:
    """Forward pass and loss of C stacked models of one plan (code being traced)."""

    #: Windows that tile the input pooled by `_tiled_max_pool` (False: every max_pool2d layer
    #: by tf.nn.max_pool2d, the program before; benchmarks/bench_layers.py --tf-pool).
    max_pool_tiled = True

    def __init__(self, spec_: LayersSpec, looped_inference: bool = False):
        self.tf = tensorflow()
        self.spec = spec_
        # An LSTM's time steps in a loop where nothing takes a gradient (the final evaluation's
        # program, run once: less to compile); unrolled in the training program (looped, the
        # LSTM study's compiled call took 2.2x the CPU).
        self.looped_inference = looped_inference

    def batch_loss(
        self, params, factors, x, y, key, details: bool = False, mask=None, dropout=None
    ):
        """Per-model loss [C] of one batch (mean data loss + penalties) and metric total [C]
        (correct predictions, or the sum over rows of each row's mean absolute error).

        x [R, ...] shared by all models (the test or train set) or [C, R, ...] (minibatches);
        y [R, w] or [C, R, w]; key: uint64 [C] dropout key (None: inference, dropout off).
        With details also the output layer's activations [C, R, K] and the probe layer's
        output [C, R, ...]. mask: float32 [R], 1 for the rows that count (None: all); the
        loss is then that of the counted rows alone, as one batch. dropout: float32 [C, dropout
        layers, 2], each model's rate and scale of each dropout layer (with a key).
        """
        tf = self.tf
        logits, activity, probe = self.forward(params, x, key, details, mask, dropout)
        data_sum, metric = self._data_sums(logits, y, mask)
        rows = logits.shape[1] if mask is None else tf.reduce_sum(mask)
        loss = self.combine(data_sum, activity, self.weight_penalty(params, factors), factors, rows)
        if not details:
            return loss, metric
        return loss, metric, self._outputs(logits), probe

    def evaluate(self, params, factors, sets, block: int, details: bool = False):
        """Per set of `sets` [(x [R, ...], y [R, w]), ...] (shared rows), `batch_loss`'s (loss,
        metric) of that set taken as one batch: a list, one pair per set. Computed `block` rows
        at a time, every set's blocks in one loop (each set padded with masked rows to whole
        blocks): a block's layer outputs stay in the cache, where the whole test set's (C
        models x 1528 rows x a conv layer's 1024 values) would not, and the layers are traced
        once for all sets (the test and validation sets of every epoch: one copy to compile).

        With details (one set) also the output layer's activations [C, R, K] and, of the probe
        layer's output, the sum and the number of exact zeros over every row and value, each
        [C]: what the final evaluation needs, without ever holding a layer's output for every
        row."""
        tf = self.tf
        c = self.spec.chunk
        assert not details or len(sets) == 1, "details: one set at a time"
        rows = [x.shape[0] for x, _ in sets]
        blocks = [-(-m // block) for m in rows]
        xs, ys, valid = [], [], []
        for (x, y), m, n_blocks in zip(sets, rows, blocks, strict=True):
            padding = n_blocks * block - m
            xs.append(tf.pad(x, [[0, padding]] + [[0, 0]] * (x.shape.rank - 1)) if padding else x)
            ys.append(tf.pad(y, [[0, padding], [0, 0]]) if padding else y)
            valid += [1.0] * m + [0.0] * padding
        x, y = (xs[0], ys[0]) if len(sets) == 1 else (tf.concat(xs, 0), tf.concat(ys, 0))
        masked = sum(rows) < len(valid)
        valid = tf.constant(np.array(valid, np.float32))
        # The set each block belongs to (the per-set totals it adds to).
        owner = tf.constant(np.repeat(np.arange(len(sets)), blocks).astype(np.int32))
        n_sets = len(sets)

        def body(j, *carry):
            start = j * block
            xb = tf.slice(x, [start] + [0] * (x.shape.rank - 1), [block, *x.shape[1:]])
            yb = tf.slice(y, [start, 0], [block, y.shape[1]])
            mask = tf.slice(valid, [start], [block]) if masked else None
            logits, activity, probe = self.forward(params, xb, None, details, mask)
            parts = (*self._data_sums(logits, yb, mask), activity)
            if details:
                flat = tf.reshape(probe, [c, block, -1])
                counted = tf.ones([block]) if mask is None else mask
                counted = counted[None, :, None]
                zeros = tf.cast(tf.equal(flat, 0.0), tf.float32)
                parts += (
                    tf.reduce_sum(flat * counted, axis=[1, 2]),
                    tf.reduce_sum(zeros * counted, axis=[1, 2]),
                )
                outputs = carry[-1].write(j, self._outputs(logits))
                carry = carry[:-1]
            if n_sets == 1:
                totals = tuple(t + p[None] for t, p in zip(carry, parts, strict=True))
            else:  # only the block's own set's totals change (a where: inf * 0 would be NaN)
                mine = tf.equal(tf.range(n_sets), owner[j])
                totals = tuple(
                    tf.where(tf.reshape(mine, [-1] + [1] * p.shape.rank), t + p[None], t)
                    for t, p in zip(carry, parts, strict=True)
                )
            return (j + 1, *totals, *((outputs,) if details else ()))

        n_kernel = len(self.spec.kernel_layers)
        shapes = [[c], [c], [c, n_kernel, 4]] + ([[c], [c]] if details else [])
        totals = tuple(tf.zeros([n_sets, *shape]) for shape in shapes)
        if details:
            totals += (tf.TensorArray(tf.float32, size=blocks[0]),)
        _, data_sum, metric, activity, *rest = tf.while_loop(
            lambda j, *_: j < sum(blocks), body, (tf.constant(0), *totals),
            maximum_iterations=sum(blocks),
        )  # fmt: skip
        weight = self.weight_penalty(params, factors)
        results = [
            (self.combine(data_sum[k], activity[k], weight, factors, m), metric[k])
            for k, m in enumerate(rows)
        ]
        if not details:
            return results
        probe_sum, probe_zeros, outputs = rest
        stacked = outputs.stack()  # [blocks, C, block, K]
        stacked = tf.reshape(tf.transpose(stacked, [1, 0, 2, 3]), [c, blocks[0] * block, -1])
        return [(*results[0], stacked[:, : rows[0]], probe_sum[0], probe_zeros[0])]

    def combine(self, data_sum, activity, weight, factors, rows):
        """Per-model loss [C] from the data loss summed over the rows [C], the activity sums
        [C, kernel layers, 4] (`_ACTIVITY_SUMS`), the kernel/bias penalties [C] and the factors:
        data_sum / rows + weight + batch_mean terms / rows + batch_sum terms."""
        tf = self.tf
        mean_cols = [COEF_INDEX[f"{side}_mean_{norm}"] for side, norm in _ACTIVITY_SUMS]
        sum_cols = [COEF_INDEX[f"{side}_sum_{norm}"] for side, norm in _ACTIVITY_SUMS]
        mean = _term(tf.gather(factors, mean_cols, axis=2), activity)
        summed = _term(tf.gather(factors, sum_cols, axis=2), activity)
        rows = tf.cast(rows, tf.float32)  # an int, or a tensor (masked rows)
        act = tf.reduce_sum(mean, axis=[1, 2]) / rows + tf.reduce_sum(summed, axis=[1, 2])
        return (data_sum / rows + weight) + act

    def weight_penalty(self, params, factors):
        """Kernel and bias penalties of every model [C] (`_weight_penalty` per kernel layer)."""
        weights = iter(params)
        total = 0.0
        row = 0
        for layer in self.spec.layers:
            layer_weights = [next(weights) for _ in layer.weights]
            if layer.kind in KERNEL_KINDS:
                total = total + self._weight_penalty(factors[:, row], layer_weights)
                row += 1
        return total

    def forward(self, params, x, key, details: bool, mask=None, dropout=None):
        """(logits [C, R, K], activity sums [C, kernel layers, 4], probe output or None).

        The logits are the output layer's values before its activation; activity sums as
        `_activity_sums` per layer with a kernel (zeros for the output layer, which carries no
        penalty). Layouts: "shared" rows x [R, ...] (the train or test set, the same for every
        model) stay shared through the layers without weights; the first layer with weights
        contracts them (or their conv patches, built once) with every model's kernel, giving
        "stacked" [C, R, ...]; minibatches are stacked from the start.
        """
        tf = self.tf
        spec_ = self.spec
        shared = x.shape.rank == len(spec_.input_shape) + 1
        rows = x.shape[0] if shared else x.shape[1]
        c = spec_.chunk
        a, layout = x, "shared" if shared else "stacked"
        weights = iter(params)
        activity = []
        probe = None
        last = len(spec_.layers) - 1
        used = spec_.activity_used or ((True,) * len(_ACTIVITY_SUMS),) * len(spec_.kernel_layers)
        dropping = 0  # dropout layers passed (rows of `dropout`)
        for k, layer in enumerate(spec_.layers):
            opts = dict(layer.options)
            if layer.kind in KERNEL_KINDS:
                layer_weights = [next(weights) for _ in layer.weights]
                if layer.kind == "lstm":
                    z = a = self._lstm(
                        a,
                        layout,
                        *layer_weights,
                        opts["return_sequences"],
                        looped=key is None and self.looped_inference,
                    )
                    layout = "stacked"
                elif layer.kind == "conv2d":
                    z, layout = self._conv2d(a, layout, *layer_weights, opts), "stacked"
                    a = _activation(z, layer.activation)
                else:
                    kernel, bias = layer_weights
                    if layout == "shared":
                        z = tf.einsum("ri,cio->cro", a, kernel) + bias[:, None]
                    else:
                        a = self._stacked(a, layout)
                        z = tf.einsum("cri,cio->cro", a, kernel) + bias[:, None]
                    layout = "stacked"
                    a = z if k == last else _activation(z, layer.activation)
                if k != last:
                    activity.append(self._activity_sums(z, a, layout, mask, used[len(activity)]))
                else:
                    activity.append(tf.zeros([c, 4], tf.float32))
            elif layer.kind == "max_pool2d":
                a = self._max_pool(a, layout, opts)
            elif layer.kind == "flatten":
                if layout == "shared":
                    a = tf.reshape(a, [rows, -1])
                else:
                    a, layout = tf.reshape(self._stacked(a, layout), [c, rows, -1]), "stacked"
            elif layer.kind == "activation":
                a = _activation(a, layer.activation)
            elif layer.kind == "dropout" and opts["rate"] == PER_MODEL_RATE:
                if key is not None:
                    a, layout = self._stacked(a, layout), "stacked"
                    layer_key = tf.bitwise.bitwise_xor(key, tf.constant(k, tf.uint64))
                    rate, scale = dropout[:, dropping, 0], dropout[:, dropping, 1]
                    a = _dropout(a, rate, scale, splitmix64(layer_key))
                dropping += 1
            if k == spec_.probe and details:
                probe = self._stacked(a, layout)
        return a, tf.stack(activity, axis=1), probe

    def _stacked(self, a, layout: str):
        """a as [C, R, ...] from any layout (see `batch_loss`)."""
        tf = self.tf
        c = self.spec.chunk
        if layout == "shared":
            return tf.broadcast_to(a[None], [c, *a.shape])
        return a

    # -- penalties ---------------------------------------------------------------------------
    def _weight_penalty(self, f, layer_weights):
        """Kernel and bias penalties [C]: factor * sum|w| and factor * sum w**2 (Keras applies
        a kernel regularizer to the input kernel only, not an LSTM's recurrent kernel)."""
        kernel, bias = layer_weights[0], layer_weights[-1]
        total = 0.0
        for value, prefix in ((kernel, "kernel"), (bias, "bias")):
            s_abs, s_sq = self._model_sums(value)
            total = total + _term(f[:, COEF_INDEX[f"{prefix}_l1"]], s_abs)
            total = total + _term(f[:, COEF_INDEX[f"{prefix}_l2"]], s_sq)
        return total

    def _activity_sums(self, z, a, layout: str, mask=None, used=(True,) * 4):
        """[C, 4]: per model the sums over every element of |z|, z**2, |a|, a**2 (stacked
        [C, ...] tensors, or shared [R, ...] ones), those `used` as one reduction over the
        layer's output stacked: separate reductions each read the whole output again (measured
        ~1.7x slower on the test set's conv feature maps). An unused column is 0."""
        tf = self.tf
        c = self.spec.chunk
        if not any(used):
            return tf.zeros([c, 4], tf.float32)
        z, a = self._stacked(z, layout), self._stacked(a, layout)
        terms = (lambda: tf.abs(z), lambda: tf.square(z), lambda: tf.abs(a), lambda: tf.square(a))
        parts = tf.stack([term() for term, on in zip(terms, used, strict=True) if on], axis=-1)
        if mask is not None:  # [R]: rows that count
            parts = parts * tf.reshape(mask, [1, -1] + [1] * (parts.shape.rank - 2))
        sums = tf.reduce_sum(tf.reshape(parts, [c, -1, parts.shape[-1]]), axis=1)
        if all(used):
            return sums
        columns, j = [], 0
        for on in used:
            columns.append(sums[:, j] if on else tf.zeros([c], tf.float32))
            j += on
        return tf.stack(columns, axis=1)

    def _model_sums(self, value):
        """(sum |v|, sum v**2) over everything of each model, each [C]; value [C, ...]."""
        tf = self.tf
        flat = tf.reshape(value, [self.spec.chunk, -1])
        return tf.reduce_sum(tf.abs(flat), axis=1), tf.reduce_sum(tf.square(flat), axis=1)

    # -- layers ------------------------------------------------------------------------------
    def _conv2d(self, x, layout: str, kernel, bias, opts):
        """Keras Conv2D without its activation: x [C, R, H, W, in] (or shared [R, H, W, in])
        -> [C, R, oh, ow, filters], by im2col: the kh x kw shifted, strided slices of the
        padded input ('same' pads as TensorFlow does, the extra row/column at the bottom/right)
        as patches [rows x positions, kh * kw * in], contracted with each model's kernel.
        Shared rows give shared patches (built once for all models); measured faster here than
        TensorFlow's convolution with C x filters output channels or a grouped convolution."""
        tf = self.tf
        c, kh, kw, ci, filters = kernel.shape
        h, w = x.shape[-3:-1]
        (sh, sw) = opts["strides"]
        oh, ow = _out_size(h, kh, sh, opts["padding"]), _out_size(w, kw, sw, opts["padding"])
        lead = x.shape[:-3]  # [R] or [C, R]
        if opts["padding"] == "same":
            ph, pw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - w, 0)
            pads = [[0, 0]] * len(lead) + [[ph // 2, ph - ph // 2], [pw // 2, pw - pw // 2], [0, 0]]
            x = tf.pad(x, pads)
        taps = [
            x[..., i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ]
        patches = tf.stack(taps, axis=-2)  # [..., oh, ow, kh * kw, in]
        kernel = tf.reshape(kernel, [c, kh * kw * ci, filters])
        if layout == "shared":
            patches = tf.reshape(patches, [-1, kh * kw * ci])
            out = tf.einsum("pk,ckf->cpf", patches, kernel)
        else:
            patches = tf.reshape(self._stacked(patches, layout), [c, -1, kh * kw * ci])
            out = tf.einsum("cpk,ckf->cpf", patches, kernel)
        rows = lead[-1]
        return tf.reshape(out + bias[:, None, :], [c, rows, oh, ow, filters])

    def _max_pool(self, x, layout: str, opts):
        """Keras MaxPooling2D, shared or stacked x: windows that tile the input by
        `_tiled_max_pool`, others by TensorFlow's op (and its padding)."""
        tf = self.tf
        h, w = x.shape[-3:-1]
        (p, q), (s, t) = opts["pool_size"], opts["strides"]
        tiled = opts["padding"] == "valid" or (h % p, w % q) == (0, 0)
        if self.max_pool_tiled and (p, q) == (s, t) and tiled:
            return _tiled_max_pool(tf, x, p, q)

        def pool(images):
            return tf.nn.max_pool2d(
                images, opts["pool_size"], opts["strides"], opts["padding"].upper()
            )

        if layout == "shared":
            return pool(x)
        c, r, h, w, ch = x.shape
        out = pool(tf.reshape(x, [c * r, h, w, ch]))
        return tf.reshape(out, [c, r, *out.shape[1:]])

    def _lstm(self, x, layout: str, kernel, recurrent, bias, return_sequences: bool, looped: bool):
        """x [C, R, T, F] (or shared [R, T, F]) -> h [C, R, units] (last) or [C, R, T, units]
        (Keras LSTMCell). looped: the time steps as a loop (no gradient; each unrolled copy
        adds to XLA's compile time and memory), else unrolled (faster to run)."""
        tf = self.tf
        c = self.spec.chunk
        if layout == "shared":
            xw = tf.einsum("rtf,cfg->crtg", x, kernel)
        else:
            xw = tf.einsum("crtf,cfg->crtg", self._stacked(x, layout), kernel)
        r, steps = xw.shape[1], xw.shape[2]
        units = recurrent.shape[1]
        h = tf.zeros([c, r, units], tf.float32)
        cell = tf.zeros([c, r, units], tf.float32)

        def step(z, h, cell):
            z = (z + tf.einsum("cru,cug->crg", h, recurrent)) + bias[:, None, :]
            i, f, g, o = tf.split(z, 4, axis=-1)
            cell = tf.sigmoid(f) * cell + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(cell), cell

        if looped:
            xw = tf.transpose(xw, [2, 0, 1, 3])  # [T, C, R, 4 units]: a step's inputs whole
            outputs = tf.TensorArray(tf.float32, size=steps)

            def body(t, h, cell, outputs):
                h, cell = step(xw[t], h, cell)
                return t + 1, h, cell, outputs.write(t, h) if return_sequences else outputs

            _, h, cell, outputs = tf.while_loop(
                lambda t, *_: t < steps, body, (tf.constant(0), h, cell, outputs),
                maximum_iterations=steps,
            )  # fmt: skip
            return tf.transpose(outputs.stack(), [1, 2, 0, 3]) if return_sequences else h
        sequence = []
        for t in range(steps):
            h, cell = step(xw[:, :, t], h, cell)
            sequence.append(h)
        return tf.stack(sequence, axis=2) if return_sequences else h

    # -- task --------------------------------------------------------------------------------
    def _data_sums(self, logits, y, mask=None):
        """Per-model data loss and metric, each summed over the rows (those of `mask` [R] only,
        if given): [C], [C]."""
        tf = self.tf
        if y.shape.rank == 2:
            y = tf.broadcast_to(y[None], [self.spec.chunk, *y.shape])
        loss_rows, metric_rows = self._data_rows(logits, y)
        if mask is not None:
            loss_rows, metric_rows = loss_rows * mask, metric_rows * mask
        return tf.reduce_sum(loss_rows, axis=1), tf.reduce_sum(metric_rows, axis=1)

    def _data_rows(self, logits, y):
        """Per-row data loss and metric, each [C, R] (tasks.py: the task's loss from the
        output layer's pre-activation values; accuracy, or the row's mean absolute error)."""
        tf = self.tf
        task = self.spec.task
        if task is Task.multiclass:
            labels = tf.cast(y[:, :, 0], tf.int32)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
            return loss, tf.cast(tf.equal(pred, labels), tf.float32)
        if task is Task.binary:
            loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)[:, :, 0]
            pred = tf.cast(tf.sigmoid(logits) > 0.5, tf.float32)  # BinaryAccuracy
            return loss, tf.cast(tf.equal(pred, y), tf.float32)[:, :, 0]
        diff = y - logits  # regression [C, R, 1], reconstruction [C, R, features]
        return tf.reduce_mean(tf.square(diff), axis=-1), tf.reduce_mean(tf.abs(diff), axis=-1)

    def _outputs(self, logits):
        tf = self.tf
        activation = spec(self.spec.task).output_activation
        if activation == "sigmoid":
            return tf.sigmoid(logits)
        if activation == "softmax":
            return tf.nn.softmax(logits, axis=-1)
        return logits


def _tiled_max_pool(tf, x, p: int, q: int):
    """Max pooling over non-overlapping p x q windows (strides = pool size, the Keras default;
    rows and columns past the last whole window dropped, as 'valid' does): x [..., H, W, ch] ->
    [..., H // p, W // q, ch], as a reshape and a max. The gradient goes, like TensorFlow's
    MaxPoolGrad, wholly to the first maximum of a window in row-major order (ties are common:
    ReLU zeros, and bias-only values where a conv sees blank image borders). XLA fuses both
    into plain loops; tf.nn.max_pool2d's reduce-window and its gradient's select-and-scatter
    cost 2.8x the CPU of the digits Conv2D study's training steps (measured, 60 epochs)."""
    *lead, h, w, ch = x.shape
    oh, ow = h // p, w // q
    windows = tf.reshape(x[..., : oh * p, : ow * q, :], [-1, oh, p, ow, q, ch])
    order = tf.reshape(tf.range(p * q), [p, 1, q, 1])  # a window's positions, row-major

    @tf.custom_gradient
    def pool(windows):
        top = tf.reduce_max(windows, axis=[2, 4], keepdims=True)

        def grad(g):
            ties = tf.where(tf.equal(windows, top), order, p * q)
            first = tf.equal(order, tf.reduce_min(ties, axis=[2, 4], keepdims=True))
            return tf.where(first, g[:, :, None, :, None, :], tf.zeros_like(windows))

        return tf.squeeze(top, axis=[2, 4]), grad

    out = pool(windows)
    return tf.reshape(out, [*lead, oh, ow, ch])


def _out_size(size: int, window: int, stride: int, padding: str) -> int:
    return -(-size // stride) if padding == "same" else (size - window) // stride + 1


def _activation(z, name: str | None):
    tf = tensorflow()
    if name == "relu":
        return tf.nn.relu(z)
    if name == "tanh":
        return tf.tanh(z)
    if name == "sigmoid":
        return tf.sigmoid(z)
    if name == "elu":
        return tf.nn.elu(z)
    if name == "softmax":
        return tf.nn.softmax(z, axis=-1)
    return z  # linear


def _term(factor, total):
    """factor * total, exactly 0 where factor is 0 (even if total overflowed: 0 * inf = NaN
    would poison a model that does not use this penalty)."""
    tf = tensorflow()
    return tf.where(factor != 0.0, factor * total, 0.0)


def _dropout(a, rate, scale, key):
    """Keras's Dropout in training: a * scale (= 1 / (1 - rate)) where a uniform draw >= rate,
    else 0; rate, scale float32 [C] (each model's own).

    The draw of element e (row-major index within the model's batch) is the top 24 bits of
    splitmix64(key + (e + 1) * gamma) / 2**24: a counter-based hash, per model (key: uint64 [C]).
    """
    tf = tensorflow()
    c = a.shape[0]
    size = math.prod(a.shape[1:])
    index = tf.range(1, size + 1, dtype=tf.int64)
    gamma = tf.constant(SPLITMIX_GAMMA, tf.uint64)
    hashes = splitmix64(key[:, None] + tf.bitcast(index, tf.uint64)[None, :] * gamma)
    top = tf.cast(tf.bitwise.right_shift(hashes, tf.constant(40, tf.uint64)), tf.float32)
    keep = tf.reshape(top * np.float32(2.0**-24) >= rate[:, None], [c, *a.shape[1:]])
    per_model = [c] + [1] * (a.shape.rank - 1)
    return tf.where(keep, a * tf.reshape(scale, per_model), 0.0)
