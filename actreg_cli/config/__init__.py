"""Experiment and sweep configs: YAML in, one validated pydantic object out.

Everything downstream (data, models, engines, study, report) takes an `ExperimentConfig`,
never a raw dict. Unknown keys are errors; every error names the file, the field path, the value
received and what is allowed, and is raised as `ConfigError` (the CLI turns it into exit code 2).

Nothing here imports TensorFlow: validating a config must take well under a second.

Modules, in the order they build on each other:
- base: ConfigError, StrictModel, the number field types and their limits.
- data: the data section, one schema per source (DataConfig, FILE_SOURCES).
- regularizers: Target, Norm, Placement, Reduction, PenaltyConfig, RegularizerConfig, custom functions.
- model: the layer schemas and ModelConfig (MLP shorthand or a list of layers).
- experiment: TrainingConfig, EarlyStoppingConfig, ExperimentConfig, SweepConfig.
- yaml_io: YAML read safely (duplicate keys, alias bombs, nesting) and written back.
- validation: set_path, validate_mapping, format_validation_error (one line per error).
- describe: describe_data, describe_experiment (a config in words).
- overrides: `--set` and `--grid` parsed and applied; `renamed` for changed experiments.
- loading: load_experiment, load_sweep (a file or a dict), load_any, with_training,
  resolve_data_path.
"""

from actreg_cli.config.base import ConfigError, StrictModel
from actreg_cli.config.data import (
    DATA_SOURCES,
    FILE_SOURCES,
    BlobsData,
    BundledData,
    CirclesData,
    ClassificationData,
    CsvData,
    DataConfig,
    MissingPolicy,
    MoonsData,
    NpzData,
    ParquetData,
    RegressionData,
    TaskName,
)
from actreg_cli.config.describe import describe_data, describe_experiment
from actreg_cli.config.experiment import (
    EarlyStoppingConfig,
    ExperimentConfig,
    SweepConfig,
    TrainingConfig,
)
from actreg_cli.config.loading import (
    DICT_ORIGIN,
    ConfigSource,
    config_origin,
    load_any,
    load_experiment,
    load_sweep,
    resolve_data_path,
    with_training,
)
from actreg_cli.config.model import (
    BUILDER_INPUTS,
    KERAS_FILE_SUFFIXES,
    LAYER_KINDS,
    ActivationLayer,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    LayerConfig,
    LstmLayer,
    MaxPool2DLayer,
    ModelConfig,
    pair,
)
from actreg_cli.config.overrides import (
    apply_overrides,
    get_path,
    grid_key,
    parse_grid_option,
    parse_override,
    renamed,
)
from actreg_cli.config.regularizers import (
    Norm,
    PenaltyConfig,
    Placement,
    Reduction,
    RegularizerConfig,
    Target,
    check_custom_function,
    import_custom_function,
    reading_saved_results,
    saved_results_only,
)
from actreg_cli.config.validation import format_validation_error, set_path, validate_mapping
from actreg_cli.config.yaml_io import dump_yaml, read_value, read_yaml_mapping

__all__ = [
    "BUILDER_INPUTS",
    "KERAS_FILE_SUFFIXES",
    "DICT_ORIGIN",
    "DATA_SOURCES",
    "FILE_SOURCES",
    "LAYER_KINDS",
    "ActivationLayer",
    "BlobsData",
    "BundledData",
    "CirclesData",
    "ClassificationData",
    "ConfigError",
    "ConfigSource",
    "Conv2DLayer",
    "CsvData",
    "DataConfig",
    "DenseLayer",
    "DropoutLayer",
    "ExperimentConfig",
    "FlattenLayer",
    "LayerConfig",
    "LstmLayer",
    "MaxPool2DLayer",
    "ModelConfig",
    "MissingPolicy",
    "MoonsData",
    "Norm",
    "NpzData",
    "ParquetData",
    "PenaltyConfig",
    "Placement",
    "Reduction",
    "RegressionData",
    "RegularizerConfig",
    "StrictModel",
    "SweepConfig",
    "TaskName",
    "Target",
    "TrainingConfig",
    "EarlyStoppingConfig",
    "apply_overrides",
    "check_custom_function",
    "config_origin",
    "describe_data",
    "describe_experiment",
    "dump_yaml",
    "format_validation_error",
    "get_path",
    "import_custom_function",
    "load_any",
    "load_experiment",
    "load_sweep",
    "grid_key",
    "parse_grid_option",
    "parse_override",
    "pair",
    "read_value",
    "read_yaml_mapping",
    "renamed",
    "resolve_data_path",
    "reading_saved_results",
    "saved_results_only",
    "set_path",
    "validate_mapping",
    "with_training",
]
