"""Which layer lists the cpu engine trains, and their geometry as its compiled loops read it
(conv_loop.py, lstm_loop.py). Plain Python: deciding imports no Numba.

- A Conv2D network: `model.layers` of one conv2d layer (any filters, kernel window, strides,
  'valid' or 'same' padding, relu/tanh/sigmoid/elu, its penalties), an optional max_pool2d and
  a flatten, on image input.
- An LSTM network: `model.layers` of one lstm layer (its last h; any units, its penalties), on
  sequence input [steps, features].

Either for a binary, multiclass or regression task. Everything else of `model.layers` (dense,
dropout or activation layers, two conv or lstm layers) is the fused engine's.
"""

from __future__ import annotations

import math

import numpy as np

from actreg_cli.config import ExperimentConfig, TaskName
from actreg_cli.engines.cpu import codes
from actreg_cli.models.plan import ModelPlan

#: The layer lists a Conv2D network may have, by kind.
CONV_NETWORKS = (("conv2d", "flatten"), ("conv2d", "max_pool2d", "flatten"))
#: The layer list of an LSTM network.
LSTM_NETWORK = ("lstm",)
#: Floats of every set's conv windows (rows x positions x kernel window) that a call builds
#: once for all its models (256 MiB); larger sets have each model build a block's windows as
#: it goes (~10% more CPU on the digits study).
WINDOW_BUDGET = 64 * 2**20
#: Conv output values (images x positions x filters) a block holds: up to 16 images within
#: 32K floats (128 KiB) per buffer, five buffers in L2 with the block's windows; at least 4
#: images (blocks.padded), whatever their size.
_BLOCK_VALUES = 32768
#: Sequences an LSTM block holds (a multiple of 4, blocks.padded).
LSTM_BLOCK = 32


def network_kind(config: ExperimentConfig) -> str | None:
    """ "conv" or "lstm" for a layer list the cpu engine's network loops may train (its kinds of
    layers; `network_reason` checks the rest), else None."""
    if config.model.layers is None:
        return None
    kinds = tuple(layer.kind for layer in config.model.layers)
    return "conv" if kinds in CONV_NETWORKS else "lstm" if kinds == LSTM_NETWORK else None


def network_reason(config: ExperimentConfig) -> str | None:
    """Why `config` is not a layer list the cpu engine trains (one line), or None."""
    if (reason := config.keras_model_reason) is not None:
        return reason
    layers = config.model.layers
    if layers is None:
        return "hidden_units is not a layer list"
    if config.data.task is TaskName.reconstruction:  # (whatever the layers: said first)
        return "the task is reconstruction"
    kind = network_kind(config)
    if kind is None:
        kinds = ", ".join(layer.kind for layer in layers)
        return (
            f"model.layers is {kinds}; of layer lists it trains conv2d, max_pool2d (optional), "
            "flatten, or one lstm"
        )
    if kind == "lstm":  # (a lone lstm gives its last h: return_sequences needs a flatten)
        return None
    if (activation := layers[0].activation) not in codes.ACTIVATIONS:
        allowed = ", ".join(codes.ACTIVATIONS)
        return f"model.layers.0 (conv2d) has activation {activation}; it trains {allowed}"
    return None


def _padding(size: int, out: int, window: int, stride: int, padding: str) -> int:
    """Rows (or columns) of padding before the first: TensorFlow's 'same' split, the smaller
    half first; 0 for 'valid'."""
    if padding != "same":
        return 0
    return max((out - 1) * stride + window - size, 0) // 2


def conv_geometry(plan: ModelPlan) -> np.ndarray:
    """int64 [codes.CONV_GEOMETRY]: a Conv2D network's plan as conv_loop.py reads it."""
    conv = plan.layers[0]
    pool = plan.layers[1] if plan.layers[1].kind == "max_pool2d" else None
    geo = np.zeros(codes.CONV_GEOMETRY, np.int64)
    h, w, c = conv.input_shape
    (kh, kw), (sh, sw) = conv.option("kernel_size"), conv.option("strides")
    oh, ow, f = conv.output_shape
    padding = conv.option("padding")
    geo[[codes.G_H, codes.G_W, codes.G_C, codes.G_KH, codes.G_KW, codes.G_SH, codes.G_SW]] = (
        h, w, c, kh, kw, sh, sw,
    )  # fmt: skip
    geo[codes.G_PT] = _padding(h, oh, kh, sh, padding)
    geo[codes.G_PL] = _padding(w, ow, kw, sw, padding)
    geo[[codes.G_OH, codes.G_OW, codes.G_F]] = (oh, ow, f)
    geo[[codes.G_QH, codes.G_QW]] = (oh, ow)
    if pool is not None:
        (ph, pw), (psh, psw) = pool.option("pool_size"), pool.option("strides")
        qh, qw, _ = pool.output_shape
        geo[[codes.G_POOL, codes.G_PH, codes.G_PW, codes.G_PSH, codes.G_PSW]] = (
            1, ph, pw, psh, psw,
        )  # fmt: skip
        geo[codes.G_PPT] = _padding(oh, qh, ph, psh, pool.option("padding"))
        geo[codes.G_PPL] = _padding(ow, qw, pw, psw, pool.option("padding"))
        geo[[codes.G_QH, codes.G_QW]] = (qh, qw)
    values = oh * ow * f
    geo[codes.G_BLOCK] = max(4, min(16, _BLOCK_VALUES // values // 4 * 4))
    return geo


def window_floats(plan: ModelPlan, rows: int) -> int:
    """Floats of the conv windows of `rows` images (`WINDOW_BUDGET`)."""
    conv = plan.layers[0]
    return rows * math.prod(conv.output_shape[:2]) * math.prod(conv.weights[0][1][:3])


def lstm_geometry(plan: ModelPlan) -> np.ndarray:
    """int64 [codes.LSTM_GEOMETRY]: an LSTM network's plan as lstm_loop.py reads it."""
    lstm = plan.layers[0]
    geo = np.zeros(codes.LSTM_GEOMETRY, np.int64)
    steps, features = lstm.input_shape
    geo[[codes.L_STEPS, codes.L_FEATURES, codes.L_UNITS]] = (steps, features, lstm.option("units"))
    geo[codes.L_BLOCK] = LSTM_BLOCK
    return geo
