"""A Keras model of your own for actreg (configs/own_model_example.yaml): a small residual MLP
with BatchNormalization, which the YAML layers cannot express.

actreg calls `build` with the keyword arguments it declares out of input_shape (one sample's
shape, a tuple), n_outputs (the task's output units) and task ('binary', 'multiclass',
'regression' or 'reconstruction'), plus the config's `model.args` (here `units`). It returns an
uncompiled model, output layer included; actreg compiles it with the task's loss and the
config's optimizer, and attaches the config's penalties by layer name ('hidden').
"""

import keras

#: the output activation each task's loss expects
OUTPUT_ACTIVATION = {"binary": "sigmoid", "multiclass": "softmax"}


def build(input_shape: tuple[int, ...], n_outputs: int, task: str, units: int = 32):
    """inputs -> Dense(units, relu) 'stem' -> + [Dense(units, relu) 'hidden' ->
    BatchNormalization 'norm'] (a residual branch) -> Dense(n_outputs) 'output'."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Dense(units, activation="relu", name="stem")(inputs)
    h = keras.layers.Dense(units, activation="relu", name="hidden")(x)
    h = keras.layers.BatchNormalization(name="norm")(h)
    x = keras.layers.Add(name="residual")([x, h])
    activation = OUTPUT_ACTIVATION.get(task, "linear")
    outputs = keras.layers.Dense(n_outputs, activation=activation, name="output")(x)
    return keras.Model(inputs, outputs, name="residual_mlp")
