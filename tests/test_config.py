"""Configs: good ones load with defaults filled in; every kind of mistake is a ConfigError that
names the file, the field, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIGS, write_yaml

from actreg_cli.config import (
    ConfigError,
    ExperimentConfig,
    Norm,
    Placement,
    Reduction,
    load_experiment,
    load_sweep,
    parse_override,
    with_training,
)


def errors_of(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return "\n".join(info.value.errors)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("circles_*.yaml")), ids=lambda p: p.name)
def test_shipped_experiment_configs_load(path: Path) -> None:
    config = load_experiment(path)
    assert config.name == path.stem
    assert config.model.hidden_units == [500]
    assert path.read_text().startswith("#"), "every config starts with a header comment"
    assert "actreg run" in path.read_text().split("\n\n")[0] or "actreg run" in path.read_text()


def test_defaults_are_the_tutorials(tmp_path: Path) -> None:
    config = load_experiment(write_yaml(tmp_path / "c.yaml", {"regularizers": [{}]}))
    assert (config.data.n_samples, config.data.n_train, config.data.noise) == (100, 30, 0.1)
    assert config.training.epochs == 4000 and config.training.batch_size == 32
    reg = config.regularizers[0]
    # Activity defaults are filled in so the resolved config records what ran.
    assert reg.placement is Placement.after_activation
    assert reg.reduction is Reduction.batch_mean
    assert (reg.l1_factor, reg.l2_factor) == (1e-4, 0.0)


@pytest.mark.parametrize(
    ("data", "test_fraction", "validation_fraction"),
    [
        ({}, None, 0.0),  # the tutorial's first-n_train split: no test_fraction applies
        ({"name": "iris"}, 0.3, 0.2),
        ({"name": "iris", "validation_fraction": 0.0}, 0.3, 0.0),
        ({"name": "npz", "path": "d.npz"}, None, 0.2),  # the file may fix the split
    ],
)
def test_a_run_folder_records_the_split_fractions_used(
    tmp_path: Path, data: dict, test_fraction: float | None, validation_fraction: float
) -> None:
    config = load_experiment(write_yaml(tmp_path / "c.yaml", {"data": data}))
    recorded = config.recorded()
    assert recorded["data"]["test_fraction"] == test_fraction
    assert recorded["data"]["validation_fraction"] == validation_fraction
    # the same experiment when read back; a sweep's stored cells still hash the nulls
    again = load_experiment(write_yaml(tmp_path / "again.yaml", recorded))
    assert again.data.effective_validation_fraction == validation_fraction
    assert again.data.effective_test_fraction == config.data.effective_test_fraction
    assert config.resolved()["data"]["validation_fraction"] == data.get("validation_fraction")


def test_l1_l2_factors(tmp_path: Path) -> None:
    config = load_experiment(
        write_yaml(
            tmp_path / "c.yaml",
            {"regularizers": [{"norm": "l1_l2", "strength": 0.01, "l2_strength": 0.02}]},
        )
    )
    assert config.regularizers[0].norm is Norm.l1_l2
    assert (config.regularizers[0].l1_factor, config.regularizers[0].l2_factor) == (0.01, 0.02)


def test_overrides_and_training_changes(tiny_config_file: Path) -> None:
    config = load_experiment(
        tiny_config_file, ["regularizers.0.norm=l2", "model.hidden_units=[4, 4]"]
    )
    assert config.regularizers[0].norm is Norm.l2
    assert config.model.hidden_units == [4, 4]
    changed = with_training(config, epochs=11, repeats=None, seed=3)
    assert (changed.training.epochs, changed.training.repeats, changed.training.seed) == (11, 2, 3)


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in errors_of(tmp_path / "nope.yaml")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    assert "is a folder" in errors_of(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# only a comment\n")
    assert "empty" in errors_of(path)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntraining:\n  epochs: [1, 2\n  seed: 3\n")
    message = errors_of(path)
    assert "invalid YAML" in message and "line 4" in message
    assert str(path) in message


def test_list_at_top_level(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "top level must be a mapping" in errors_of(path)


def test_list_where_mapping_belongs(tmp_path: Path) -> None:
    message = errors_of(write_yaml(tmp_path / "c.yaml", {"training": [1, 2]}))
    assert "training" in message and "dictionary" in message


def test_misspelled_key_gets_a_suggestion(tmp_path: Path) -> None:
    message = errors_of(
        write_yaml(tmp_path / "c.yaml", {"trainig": {"epochs": 5}, "model": {"hiden_units": [3]}})
    )
    assert "unknown key 'trainig'; did you mean 'training'?" in message
    assert "unknown key 'model.hiden_units'; did you mean 'hidden_units'?" in message


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    message = errors_of(write_yaml(tmp_path / "c.yaml", {"training": {"epochs": "many"}}))
    assert f"{tmp_path / 'c.yaml'}: training.epochs:" in message and "'many'" in message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"training": {"epochs": 0}}, ["training.epochs", "greater than 0", "(got 0)"]),
        (
            {"model": {"hidden_units": [500, -3]}},
            ["model.hidden_units.1", "greater than 0", "(got -3)"],
        ),
        ({"model": {"hidden_units": []}}, ["model.hidden_units", "at least 1"]),
        (
            {"training": {"learning_rate": float("inf")}},
            ["training.learning_rate", "finite", "inf"],
        ),
        ({"regularizers": [{"strength": float("nan")}]}, ["regularizers.0.strength", "finite"]),
        (
            {"regularizers": [{"strength": -1e-4}]},
            ["regularizers.0.strength", "greater than or equal to 0"],
        ),
        ({"data": {"n_train": 100}}, ["n_train must be smaller than n_samples", "n_train=100"]),
        ({"model": {"activation": "rellu"}}, ["model.activation", "'relu'", "'tanh'", "'rellu'"]),
        (
            {"regularizers": [{"target": "kernel", "placement": "before_activation"}]},
            ["regularizers.0", "'placement' applies only to activity"],
        ),
        (
            {"regularizers": [{"layer": 2}]},
            ["regularizers.0.layer must index a hidden layer", "got 2"],
        ),
        ({"regularizers": [{"norm": "custom"}]}, ["norm 'custom' needs 'function"]),
        (
            {"regularizers": [{"norm": "custom", "function": "no_such_module_xyz:f"}]},
            ["cannot import module 'no_such_module_xyz'"],
        ),
        (
            {"regularizers": [{"norm": "custom", "function": "numpy:abs"}]},
            ["must return a scalar", "[3, 4]"],
        ),
    ],
)
def test_bad_values(tmp_path: Path, data: dict, words: list[str]) -> None:
    message = errors_of(write_yaml(tmp_path / "c.yaml", data))
    for word in words:
        assert word in message, message


def test_unknown_set_key(tiny_config_file: Path) -> None:
    message = errors_of(tiny_config_file, ["training.epoch=3"])
    assert (
        "--set 'training.epoch=3': unknown key 'training.epoch'; did you mean 'epochs'?" in message
    )


def test_set_index_out_of_range(tiny_config_file: Path) -> None:
    assert "the list has 1 item(s)" in errors_of(tiny_config_file, ["regularizers.3.strength=1"])


def test_set_without_equals(tiny_config_file: Path) -> None:
    assert "expected KEY=VALUE" in errors_of(tiny_config_file, ["training.epochs"])


def test_sweep_file_given_to_run(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "s.yaml", {"base": {}, "grid": {"regularizers.0.strength": [1e-3]}}
    )
    assert "sweep config" in errors_of(path)


def test_sweep_config_set_addresses_base(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "s.yaml",
        {"base": {"regularizers": [{}]}, "grid": {"regularizers.0.strength": [1e-3, 1e-2]}},
    )
    sweep = load_sweep(path, ["training.epochs=5"])
    assert sweep.base.training.epochs == 5
    assert isinstance(sweep.base, ExperimentConfig)


def test_only_unquoted_exponent_numbers_on_the_command_line_are_floats() -> None:
    config = load_experiment(
        CONFIGS / "circles_l1_before_relu.yaml", ["name='1e5'", "regularizers.0.strength=1e-5"]
    )
    assert config.name == "1e5"  # quoted: the string as typed
    assert config.regularizers[0].strength == pytest.approx(1e-5)  # YAML 1.1 would say "1e-5"
    assert parse_override('name="2E-3"') == ("name", "2E-3")
    assert parse_override("regularizers.0.strength=-2E+3") == ("regularizers.0.strength", -2000.0)


# ---------------------------------------------------------------------------------------------
# Layer lists: `--set` and `--grid` reach any layer's field


def layer_config_file(tmp_path: Path) -> Path:
    return write_yaml(
        tmp_path / "layers.yaml",
        {
            "data": {"name": "digits", "input_shape": [8, 8, 1]},
            "model": {
                "layers": [
                    {"kind": "conv2d", "filters": 4, "regularizers": [{"strength": 1e-3}]},
                    {"kind": "flatten"},
                    {"kind": "dense", "units": 5},
                ]
            },
        },
    )


def test_set_reaches_layer_fields_and_their_regularizers(tmp_path: Path) -> None:
    path = layer_config_file(tmp_path)
    config = load_experiment(
        path,
        [
            "model.layers.0.regularizers.0.strength=1e-2",
            "model.layers.0.filters=7",
            "model.layers.0.kernel_size=[3,2]",
            "model.layers.2.regularizers=[{target: kernel, norm: l2}]",
        ],
    )
    conv = config.model.layers[0]
    assert conv.filters == 7 and conv.kernel_size == [3, 2]
    assert conv.regularizers[0].strength == pytest.approx(1e-2)
    assert config.model.layers[2].regularizers[0].norm is Norm.l2
    assert config.probe_layer == 0 and config.probe_name == "model.layers.0 (conv2d)"
    # a field the layer's kind does not have: named with the kind's fields
    message = errors_of(path, ["model.layers.1.filters=3"])
    assert "--set 'model.layers.1.filters=3': unknown key 'model.layers.1.filters'" in message
    assert "(allowed: kind)" in message
    message = errors_of(path, ["model.layers.0.filter=3"])
    assert "did you mean 'filters'?" in message
    message = errors_of(path, ["model.layers.0.regularizers.0.placement=before_relu"])
    assert "model.layers.0.regularizers.0.placement" in message
    assert "'before_activation' or 'after_activation'" in message


def test_grid_reaches_layer_fields_and_baselines_drop_layer_regularizers(tmp_path: Path) -> None:
    from actreg_cli.study.sweep.grid import baseline_for, expand_grid, is_regularizer_key

    path = layer_config_file(tmp_path)
    sweep = load_sweep(
        path,
        [],
        ["model.layers.0.regularizers.0.strength=1e-3,1e-2", "model.layers.0.filters=2,4"],
    )
    cells = expand_grid(sweep)
    regular = [c for c in cells if not c.baseline]
    baselines = [c for c in cells if c.baseline]
    assert len(regular) == 4 and len(baselines) == 2  # one baseline per filters value
    assert sorted(
        (c.config.model.layers[0].filters, c.config.model.layers[0].regularizers[0].strength)
        for c in regular
    ) == [(2, 1e-3), (2, 1e-2), (4, 1e-3), (4, 1e-2)]
    for base in baselines:
        # no penalty anywhere: neither the layer's own nor the experiment's
        assert base.config.all_regularizers == []
        assert list(base.values) == ["model.layers.0.filters"]
    for cell in regular:
        base = baseline_for(cell, cells)
        assert base.config.model.layers[0].filters == cell.config.model.layers[0].filters
    assert is_regularizer_key("model.layers.12.regularizers.0.strength")
    assert is_regularizer_key("model.layers.0.regularizers")
    assert not is_regularizer_key("model.layers.0.filters")
    assert not is_regularizer_key("model.layers.0.regularizersX")


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.glob("digits_*.yaml")) + [CONFIGS / "sweep_dropout.yaml"],
    ids=lambda p: p.name,
)  # fmt: skip
def test_layer_study_configs_load_and_fit_their_data(path: Path) -> None:
    from actreg_cli.study.sweep.plan import check_sweep

    text = path.read_text()
    header = text.split("\nname:")[0]
    for word in ("# Run:", "# Expect:", "# Output:", f"actreg sweep configs/{path.name}"):
        assert word in header, word
    sweep = load_sweep(path)
    cells = check_sweep(sweep, str(path))  # plans every cell on its data
    assert any(c.baseline for c in cells)
    assert sweep.base.training.repeats == 10


def test_describe_experiment_names_layers_and_their_penalties(tmp_path: Path) -> None:
    from actreg_cli.config import describe_experiment

    config = load_experiment(layer_config_file(tmp_path))
    assert describe_experiment(config) == (
        "digits data (test fraction 0.3, standardized, as 8x8x1); layers conv2d 4 3x3 relu, "
        "flatten, dense 5 relu; L1 0.001 on activity of layer 0 after activation (batch_mean); "
        "adam lr 0.001; 4000 epochs"
    )
    shorthand = ExperimentConfig.model_validate({"model": {"hidden_units": [8], "dropout": 0.5}})
    assert "; MLP [8] relu dropout 0.5; no regularization;" in describe_experiment(shorthand)
