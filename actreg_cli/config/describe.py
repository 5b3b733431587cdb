"""Configs in words: the data source, the layers and a whole experiment in one line (used for
descriptions, plot titles and reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actreg_cli.config.data import DataConfig, TaskName
from actreg_cli.config.experiment import ExperimentConfig
from actreg_cli.config.model import (
    ActivationLayer,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    LstmLayer,
    MaxPool2DLayer,
    pair,
)
from actreg_cli.config.regularizers import Norm, Target


def describe_data(data: DataConfig) -> str:
    """The data source in words, e.g. 'circles data (100 samples, 30 train, noise 0.1)' or
    'breast_cancer data (test fraction 0.3, standardized)'."""
    details = []
    if (path := getattr(data, "path", None)) is not None:
        details.append(Path(path).name)  # the full path is in config.yaml
    if (n_samples := getattr(data, "n_samples", None)) is not None:
        details.append(f"{n_samples} samples")
    if data.uses_first_n_train:
        details.append(f"{data.n_train} train")
    else:
        details.append(f"test fraction {data.effective_test_fraction:g}")
    if (noise := getattr(data, "noise", None)) is not None:
        details.append(f"noise {noise:g}")
    if data.standardize:
        details.append("standardized")
    if data.input_shape is not None:
        details.append("as " + "x".join(str(n) for n in data.input_shape))
    if data.task is TaskName.reconstruction:
        details.append("reconstructed")
    if data.resample:
        details.append("resampled per repeat")
    return f"{data.name} data ({', '.join(details)})"


def _describe_layer(layer: Any) -> str:
    """One layer of model.layers in words: 'conv2d 16 3x3 relu', 'max_pool2d 2x2', 'lstm 32'."""
    if isinstance(layer, DenseLayer):
        return f"dense {layer.units} {layer.activation}"
    if isinstance(layer, Conv2DLayer):
        rows, cols = pair(layer.kernel_size)
        return f"conv2d {layer.filters} {rows}x{cols} {layer.activation}"
    if isinstance(layer, LstmLayer):
        return f"lstm {layer.units}" + (" (sequences)" if layer.return_sequences else "")
    if isinstance(layer, MaxPool2DLayer):
        rows, cols = pair(layer.pool_size)
        return f"max_pool2d {rows}x{cols}"
    if isinstance(layer, DropoutLayer):
        return f"dropout {layer.rate:g}"
    if isinstance(layer, ActivationLayer):
        return f"activation {layer.activation}"
    return layer.kind


def describe_experiment(config: ExperimentConfig) -> str:
    """What runs, in words: data, model, every penalty, optimiser and epochs (one line).

    e.g. 'circles data (100 samples, 30 train, noise 0.1); MLP [500] relu; L1 0.001 on activity
    before activation (batch_sum); adam lr 0.001; 4000 epochs'.
    """
    data, model, training = config.data, config.model, config.training
    if model.is_keras_model:
        network = f"Keras model {model.keras_source}"
        n_layers = 2  # penalties say which layer (by name) they are on
    elif model.layers is None:
        network = f"MLP {model.hidden_units} {model.activation}"
        if model.dropout > 0:
            network += f" dropout {model.dropout:g}"
        n_layers = len(model.hidden_units)
    else:
        network = "layers " + ", ".join(_describe_layer(layer) for layer in model.layers)
        n_layers = len(model.layers)
    parts = [describe_data(data), network]
    penalties = []
    for index, reg in config.all_regularizers:
        norm = {"l1": "L1", "l2": "L2", "l1_l2": "L1L2", "custom": "custom"}[reg.norm.value]
        what = f"{norm} {reg.strength:g}"
        if reg.norm is Norm.custom:
            what += f" x {reg.function}"
        where = f"on {reg.target.value}"
        if isinstance(index, str):
            where += f" of layer '{index}'"
        elif n_layers > 1:
            where += f" of layer {index}"
        if reg.target is Target.activity:
            where += f" {reg.placement.value.replace('_', ' ')} ({reg.reduction.value})"
        penalties.append(f"{what} {where}")
    parts.append(", ".join(penalties) if penalties else "no regularization")
    parts.append(f"{training.optimizer} lr {training.learning_rate:g}")
    parts.append(f"{training.epochs} epochs")
    return "; ".join(parts)
