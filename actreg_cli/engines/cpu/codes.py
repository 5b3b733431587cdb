"""The numbers the cpu engine's compiled loops take for names: the activation, optimizer and
task codes, and the columns of a model's penalty table (float32 [L, 12] per model). Plain
Python: engine.py reads the codes without importing Numba.
"""

from __future__ import annotations

from actreg_cli.engines.penalties import COEF_COLUMNS

#: Activation codes (config.model.activation -> int).
ACTIVATIONS = {"relu": 0, "tanh": 1, "sigmoid": 2, "elu": 3}
#: Optimizer codes.
OPTIMIZERS = {"adam": 0, "sgd": 1}
#: Task codes (tasks.Task values -> int).
TASKS = {"binary": 0, "multiclass": 1, "regression": 2}
BINARY, MULTICLASS, REGRESSION = TASKS["binary"], TASKS["multiclass"], TASKS["regression"]

# Columns of a model's penalty table (penalties.COEF_COLUMNS, the one list of them). Both loops
# read a batch_sum column as its batch_mean column + 2.
K_L1, K_L2, B_L1, B_L2 = (COEF_COLUMNS.index(f"{t}_{n}") for t in ("kernel", "bias") for n in ("l1", "l2"))  # fmt: skip
BEFORE_MEAN_L1, BEFORE_MEAN_L2, BEFORE_SUM_L1, BEFORE_SUM_L2 = (
    COEF_COLUMNS.index(f"before_{r}_{n}") for r in ("mean", "sum") for n in ("l1", "l2")
)
AFTER_MEAN_L1, AFTER_MEAN_L2, AFTER_SUM_L1, AFTER_SUM_L2 = (
    COEF_COLUMNS.index(f"after_{r}_{n}") for r in ("mean", "sum") for n in ("l1", "l2")
)

# Columns of a model's early-stopping settings (float64 [7] per model, engine.py
# `stopping_settings`; stopping.py reads them): watched (1) or not (0), the rows' column of the
# monitored total (4: val loss, 5: val metric), higher is better (1/0), min_delta, patience,
# restore_best_weights (1/0), start_from_epoch.
STOP_ON, STOP_COLUMN, STOP_HIGHER, STOP_MIN_DELTA, STOP_PATIENCE, STOP_RESTORE, STOP_START = range(7)  # fmt: skip
STOP_SETTINGS = 7

# The geometry of a Conv2D network (conv_loop.py), int64 [CONV_GEOMETRY] (engine.py
# `conv_geometry`): the input image (height, width, channels), the kernel window, strides and
# padding before the first row and column (TensorFlow's 'same' split: less on top and left),
# the conv output (rows, columns, filters), whether a MaxPooling2D follows (1/0) with its window,
# strides, padding and output rows and columns (the conv output's own without one), and the
# images a block holds (a multiple of 4).
(
    G_H, G_W, G_C, G_KH, G_KW, G_SH, G_SW, G_PT, G_PL, G_OH, G_OW, G_F,
    G_POOL, G_PH, G_PW, G_PSH, G_PSW, G_PPT, G_PPL, G_QH, G_QW, G_BLOCK,
) = range(22)  # fmt: skip
CONV_GEOMETRY = 22

# The geometry of an LSTM network (lstm_loop.py), int64 [LSTM_GEOMETRY] (network_plan.py
# `lstm_geometry`): time steps, features a step, units, and the sequences a block holds (a
# multiple of 4).
L_STEPS, L_FEATURES, L_UNITS, L_BLOCK = range(4)
LSTM_GEOMETRY = 4
