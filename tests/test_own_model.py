"""A Keras model of your own (`model.keras`, `model.keras_file`): config checks, the builder
call, output and layer-name checks, penalties attached by name (before_activation equal to a
linear layer + Activation), repeats from seeds, sweeps over model.args, and re-drawing a folder
without the user's code. Tiny models, 1-2 epochs on the tutorial's 30 training rows."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, assert_exit_2, invoke, write_yaml

from actreg_cli.config import ExperimentConfig, load_experiment, load_sweep

BUILDERS = '''
import keras

CALLS = []


def build(input_shape, n_outputs, units=4):
    """functional: dense 'stem' -> dense 'hidden' (relu) -> BatchNormalization 'norm' + stem"""
    CALLS.append({"input_shape": input_shape, "n_outputs": n_outputs, "units": units})
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Dense(units, activation="relu", name="stem")(inputs)
    h = keras.layers.Dense(units, activation="relu", name="hidden")(x)
    h = keras.layers.BatchNormalization(name="norm")(h)
    x = keras.layers.Add(name="residual")([x, h])
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="sigmoid", name="out")(x))


def sequential(task, n_outputs, **kwargs):
    CALLS.append({"task": task, **kwargs})
    return keras.Sequential([
        keras.layers.Dense(3, activation="tanh", name="hidden",
                           kernel_regularizer=keras.regularizers.L2(0.5)),
        keras.layers.Dense(n_outputs, activation="sigmoid", name="out"),
    ])


def wrong_units(input_shape):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid")(inputs))


def wrong_activation(input_shape):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(1, name="last")(inputs))


def recurrent(input_shape, n_outputs):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Reshape((2, 1))(inputs)
    x = keras.layers.SimpleRNN(3, name="rnn")(x)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="sigmoid")(x))


def raises(input_shape):
    raise RuntimeError("no GPU here")


def not_a_model():
    return 42


class Unclonable(keras.layers.Layer):
    def __init__(self, factor):  # no **kwargs: from_config(get_config()) fails
        super().__init__()
        self.factor = factor

    def call(self, x):
        return x * self.factor


def custom_layer(input_shape):
    inputs = keras.Input(shape=input_shape)
    x = Unclonable(2.0)(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="out")(x))
'''


@pytest.fixture
def builders(tmp_path: Path) -> Path:
    """A builder module (tiny_models.py) beside the configs in tmp_path."""
    (tmp_path / "tiny_models.py").write_text(BUILDERS, encoding="utf-8")
    return tmp_path


def own_config(folder: Path, name: str = "own", **changes) -> Path:
    """A config of tiny_models.py:build (relative: resolved against the config's folder)."""
    data = {
        "name": name,
        "model": {"keras": "tiny_models.py:build", "args": {"units": 4}},
        "regularizers": [
            {"layer": "hidden", "norm": "l1", "strength": 1e-2, "placement": "before_activation"}
        ],
        "training": {"epochs": 1, "repeats": 2, "seed": 3},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return write_yaml(folder / f"{name}.yaml", data)


# ---------------------------------------------------------------------------------------------
# config: strings only


@pytest.mark.parametrize(
    ("model", "regularizers", "words"),
    [
        ({"keras": "m.py:build", "hidden_units": [8]}, [], ["remove 'hidden_units'"]),
        ({"keras": "m.py:build", "activation": "tanh"}, [], ["remove 'activation'"]),
        ({"keras": "m.py:build", "keras_file": "m.keras"}, [], ["either 'keras'"]),
        ({"keras": "no_colon"}, [], ["package.module:function"]),
        ({"keras": "__main__:build"}, [], ["worker processes cannot import", "'file.py:build'"]),
        ({"keras_file": "m.txt"}, [], [".keras or .h5"]),
        ({"keras": "m.py:build", "args": {"task": "x"}}, [], ["args cannot set task"]),
        ({"hidden_units": [4], "args": {"units": 3}}, [], ["set 'keras'"]),
        ({"keras": "m.py:build"}, [{"layer": 0}], ["names its layers", "regularizers.0.layer"]),
        ({"hidden_units": [4]}, [{"layer": "hidden"}], ["index into model.hidden_units"]),
        ({"hidden_units": [4], "probe": "x"}, [], ["'probe' names a layer of a Keras model"]),
    ],
)
def test_bad_model_sections_are_exit_2(tmp_path: Path, model, regularizers, words) -> None:
    path = write_yaml(tmp_path / "bad.yaml", {"model": model, "regularizers": regularizers})
    assert_exit_2(invoke("validate", path), "bad.yaml", *words)


def test_paths_resolve_against_the_config_folder_and_set_and_grid_reach_args(
    tmp_path: Path,
) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    write_yaml(sub / "a.yaml", {"model": {"keras": "m.py:build", "args": {"units": 4}}})
    write_yaml(sub / "b.yaml", {"model": {"keras_file": "saved/m.keras"}})
    write_yaml(sub / "c.yaml", {"model": {"keras": "pkg.mod:build"}})
    assert load_experiment(sub / "a.yaml").model.keras == f"{sub / 'm.py'}:build"
    assert load_experiment(sub / "b.yaml").model.keras_file == str(sub / "saved" / "m.keras")
    assert load_experiment(sub / "c.yaml").model.keras == "pkg.mod:build"  # an import path
    cfg = load_experiment(sub / "a.yaml", ["model.args.depth=2"])
    assert cfg.model.args == {"units": 4, "depth": 2}
    assert "Keras model m.py:build(units=4, depth=2)" in cfg.description
    assert cfg.name == "experiment-depth-2"
    sweep = load_sweep(sub / "a.yaml", grid=["model.args.units=8,16"])
    assert sweep.grid == {"model.args.units": [8, 16]}


def test_cpu_and_fused_say_why_and_auto_picks_jax_or_keras(builders: Path) -> None:
    import importlib.util

    from actreg_cli.engines import select_engine

    path = own_config(builders)
    validated = invoke("validate", path)  # the config's form: no Keras, no user code
    assert validated.exit_code == 0 and "ok: " in validated.output, validated.output
    cfg = load_experiment(path)
    engine, note = select_engine("auto", [cfg])
    # where jax is installed (tests/test_engines_jax.py), the one of jax and keras estimated
    # cheaper for this job (tests/test_engine_costs.py); else keras
    expected = "keras"
    if importlib.util.find_spec("jax") is not None:
        from actreg_cli.engines.costs import estimates

        expected = min(estimates(["jax", "keras"], [cfg]).items(), key=lambda kv: kv[1])[0]
    assert engine.name == expected
    # one reason, said once for both engines it rules out
    assert note.startswith(
        f"using the {expected} engine: the cpu and fused engines cannot run this config "
        "(model.keras is a Keras model of your own, which only the jax and keras engines train)"
    )
    for name in ("cpu", "fused"):
        result = invoke("run", builders / "own.yaml", "--engine", name)
        assert_exit_2(result, f"the {name} engine cannot run", "only the jax and keras engines")


# ---------------------------------------------------------------------------------------------
# building and checking


def loaded(path: Path):
    """(config, Dataset) of a config file."""
    from actreg_cli.data import check_data

    cfg = load_experiment(path)
    return cfg, check_data(cfg)


def test_the_builder_gets_the_inputs_it_declares_and_the_args(builders: Path) -> None:
    from actreg_cli.models.keras_model import build_own_model, import_builder

    cfg, data = loaded(own_config(builders))
    build_own_model(cfg, data, seed=1)
    calls = import_builder(cfg.model.keras).__globals__["CALLS"]
    # build declares input_shape and n_outputs (not task), and units from model.args
    assert calls[-1] == {"input_shape": (2,), "n_outputs": 1, "units": 4}
    cfg, data = loaded(
        own_config(builders, model={"keras": "tiny_models.py:sequential", "args": {"extra": 1}})
    )
    model = build_own_model(cfg, data, seed=1)
    # **kwargs takes whatever the tool gives; a Sequential without an Input is built for the data
    assert calls[-1] == {"task": "binary", "input_shape": (2,), "extra": 1}
    assert [layer.name for layer in model.layers][1:] == ["hidden", "out"]


@pytest.mark.parametrize(
    ("model", "layer", "target", "words"),
    [
        ("tiny_models.py:wrong_units", "x", "activity", ["outputs of shape [3]", "needs [1]"]),
        (
            "tiny_models.py:wrong_activation", "x", "activity",
            ["output layer 'last' has activation 'linear'", "expects 'sigmoid'"],
        ),
        ("tiny_models.py:raises", "x", "activity", ["model.keras", "RuntimeError: no GPU here"]),
        ("tiny_models.py:not_a_model", "x", "activity", ["returned int, not a keras.Model"]),
        ("tiny_models.py:custom_layer", "out", "activity", ["model.keras: cloning the model"]),
        ("missing.py:build", "x", "activity", ["model.keras", "missing.py: no such file"]),
        ("no_such_pkg.mod:build", "x", "activity", ["cannot import module 'no_such_pkg.mod'"]),
        (
            "tiny_models.py:build", "hiden", "activity",
            ["regularizers.0.layer", "no layer named 'hiden'", "stem, hidden, norm, residual"],
        ),
        (
            "tiny_models.py:build", "norm", "kernel",
            ["layer 'norm' (BatchNormalization) has no kernel"],
        ),
        ("tiny_models.py:build", "residual", "bias", ["layer 'residual' (Add) has no bias"]),
        (
            "tiny_models.py:recurrent", "rnn", "before",
            ["layer 'rnn' (SimpleRNN) applies its activation 'tanh' inside", "after_activation"],
        ),
    ],
)  # fmt: skip
def test_bad_models_are_exit_2_before_anything_is_written(
    builders: Path, model: str, layer: str, target: str, words: list[str]
) -> None:
    reg = {"layer": layer, "target": target, "norm": "l1", "strength": 1e-3}
    if target == "before":
        reg.update(target="activity", placement="before_activation")
    path = own_config(builders, model={"keras": model}, regularizers=[reg])
    runs = builders / "runs"
    assert_exit_2(invoke("run", path, "--runs-dir", runs), "own.yaml", *words)
    assert not runs.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short", bytes(range(256)) * 4])
def test_a_damaged_keras_file_is_named_as_damaged(builders: Path, content: bytes) -> None:
    (builders / "damaged.keras").write_bytes(content)
    path = own_config(builders, model={"keras_file": "damaged.keras"}, regularizers=[])
    runs = builders / "runs"
    assert_exit_2(
        invoke("run", path, "--runs-dir", runs),
        "model.keras_file",
        "damaged.keras: not a saved Keras model (a .keras file is a zip archive)",
    )
    assert not runs.exists()


def test_unknown_args_and_probe_layers_are_named(builders: Path) -> None:
    path = own_config(builders, model__args={"units": 4, "depth": 3})
    result = invoke("run", path, "--runs-dir", builders / "runs")
    assert_exit_2(result, "model.args.depth: build() has no parameter 'depth'", "units")
    path = own_config(builders, model__probe="nope")
    result = invoke("run", path, "--runs-dir", builders / "runs")
    assert_exit_2(result, "model.probe: the model has no layer named 'nope'", "stem, hidden")


def evaluate_loss(model, x: np.ndarray, y: np.ndarray) -> float:
    """The model's loss with its penalties on one batch of x (what training minimizes)."""
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return float(model.evaluate(x, y, batch_size=len(x), verbose=0))


def test_before_activation_equals_a_linear_layer_then_an_activation_layer(builders: Path) -> None:
    import keras

    from actreg_cli.config import RegularizerConfig
    from actreg_cli.engines.keras.own_model import build_trainable_model
    from actreg_cli.engines.keras.penalties import penalty_function

    regs = [
        {"layer": "hidden", "norm": "l1", "strength": 0.05, "placement": "before_activation",
         "reduction": "batch_sum"},
        {"layer": "hidden", "norm": "l2", "strength": 0.1, "placement": "after_activation"},
        {"layer": "stem", "target": "kernel", "norm": "l1", "strength": 0.01},
        {"layer": "out", "target": "bias", "norm": "l2", "strength": 0.2},
    ]  # fmt: skip
    cfg, data = loaded(own_config(builders, regularizers=regs))
    model, probe = build_trainable_model(cfg, data, seed=5)
    assert [layer.name for layer in model.layers][1:] == [
        "stem", "hidden", "hidden_activation", "norm", "residual", "out",
    ]  # fmt: skip
    pen = [penalty_function(RegularizerConfig.model_validate(r)) for r in regs]
    # the same network as the YAML models build it: a linear Dense, then an Activation layer
    inputs = keras.Input(shape=(2,))
    x = keras.layers.Dense(4, activation="relu", kernel_regularizer=pen[2])(inputs)
    h = keras.layers.Dense(4, activity_regularizer=pen[0])(x)
    h = keras.layers.Activation("relu", activity_regularizer=pen[1])(h)
    h = keras.layers.BatchNormalization()(h)
    x = keras.layers.Add()([x, h])
    out = keras.layers.Dense(1, activation="sigmoid", bias_regularizer=pen[3])(x)
    reference = keras.Model(inputs, out)
    reference.set_weights(model.get_weights())
    x_test, y_test = data.x_test[:16], data.y_test[:16]
    got, want = evaluate_loss(model, x_test, y_test), evaluate_loss(reference, x_test, y_test)
    assert got == pytest.approx(want, rel=1e-6)
    # and the penalties are really there: above the data loss alone of the same outputs
    outputs = np.asarray(model(x_test, training=False))[:, 0]
    data_loss = float(np.mean(keras.losses.binary_crossentropy(y_test[:, 0:1], outputs[:, None])))
    assert got > data_loss + 1e-3
    # the probe is the penalized layer after its activation
    hidden = np.asarray(probe(x_test))
    assert hidden.shape == (16, 4) and hidden.min() >= 0.0


def test_the_models_own_penalties_are_kept_beside_the_configs(builders: Path) -> None:
    from actreg_cli.engines.keras.own_model import build_trainable_model

    reg = {"layer": "hidden", "target": "kernel", "norm": "l1", "strength": 0.1}
    cfg, data = loaded(
        own_config(builders, model={"keras": "tiny_models.py:sequential"}, regularizers=[reg])
    )
    model, _ = build_trainable_model(cfg, data, seed=2)
    kernel = np.asarray(model.get_layer("hidden").kernel)
    penalty = sum(float(loss) for loss in model.losses)  # weight penalties, computed on access
    assert penalty == pytest.approx(0.5 * (kernel**2).sum() + 0.1 * np.abs(kernel).sum(), 1e-5)


# ---------------------------------------------------------------------------------------------
# repeats, keras_file, run folders, sweeps, re-drawing without the user's code


def weights_of(cfg: ExperimentConfig, data, seed: int) -> list[np.ndarray]:
    from actreg_cli.engines.keras.own_model import build_trainable_model

    return build_trainable_model(cfg, data, seed)[0].get_weights()


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_keras_file_is_reinitialized_from_each_repeats_seed(builders: Path) -> None:
    from actreg_cli.models.keras_model import import_builder

    build = import_builder(f"{builders / 'tiny_models.py'}:build")
    saved = build(input_shape=(2,), n_outputs=1, units=3)
    saved.save(builders / "m.keras")
    path = own_config(builders, model={"keras_file": "m.keras"})
    cfg, data = loaded(path)
    first, again, other = (weights_of(cfg, data, s) for s in (11, 11, 12))
    assert same(first, again) and not same(first, other)
    assert not same(first, saved.get_weights())  # the file's weights are not used
    # a builder too: a repeat's weights depend on its seed alone
    cfg_b, _ = loaded(own_config(builders, name="b"))
    assert same(weights_of(cfg_b, data, 4), weights_of(cfg_b, data, 4))
    assert not same(weights_of(cfg_b, data, 4), weights_of(cfg_b, data, 5))

    runs = builders / "runs"
    # the keras engine in this process (auto's jax engine is tested in test_engines_jax.py)
    result = invoke("run", path, "--runs-dir", runs, "--engine", "keras")
    assert result.exit_code == 0, result.output
    run_dir = Path(result.output.strip().splitlines()[-1])
    meta = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert meta["own_model"]["source"] == "file m.keras"
    digest = hashlib.sha256((builders / "m.keras").read_bytes()).hexdigest()
    assert meta["own_model"]["source_sha256"] == digest
    assert [row["name"] for row in meta["own_model"]["layers"]] == [
        "stem", "hidden", "norm", "residual", "out",
    ]  # fmt: skip
    repeats = (run_dir / "repeats.csv").read_text().splitlines()
    assert len(repeats) == 3  # header and 2 repeats
    report = (run_dir / "report.md").read_text()
    assert "Keras model file m.keras" in report and "hidden (Dense relu)" in report
    assert "layer 'hidden'" in (run_dir / "summary.json").read_text()
    # the folder's config.yaml re-runs the run: the same numbers
    again = invoke("run", run_dir / "config.yaml", "--runs-dir", runs, "--engine", "keras")
    assert again.exit_code == 0, again.output
    rerun = Path(again.output.strip().splitlines()[-1])
    assert (rerun / "repeats.csv").read_text() == (run_dir / "repeats.csv").read_text()


def test_sweep_over_model_args_and_redraw_without_the_users_code(builders: Path) -> None:
    from actreg_cli.study.sweep.grid import expand_grid

    path = own_config(builders, training={"epochs": 1, "repeats": 1, "seed": 0})
    layers = expand_grid(load_sweep(path, grid=["regularizers.0.layer=hidden,stem"]))
    assert [c.config.regularizers[0].layer for c in layers if not c.baseline] == ["hidden", "stem"]
    # the baseline (no penalties) summarises the base's penalized layer, not the first one
    assert [c.config.probe_layer for c in layers] == ["hidden", "hidden", "stem"]
    runs = builders / "runs"
    result = invoke(
        "sweep", path, "--grid", "model.args.units=2,3", "--runs-dir", runs, "--engine", "keras"
    )
    assert result.exit_code == 0, result.output
    study = Path(result.output.strip().splitlines()[-1])
    table = (study / "summary.csv").read_text()
    assert "model.args.units" in table.splitlines()[0]
    assert "the model has none of its own" in (study / "report.md").read_text()
    # a model with a penalty of its own: kept, and said so
    path = own_config(builders, name="seq", model={"keras": "tiny_models.py:sequential"})
    run = invoke("run", path, "--runs-dir", runs, "--repeats", 1, "--engine", "keras")
    assert run.exit_code == 0, run.output
    run_dir = Path(run.output.strip().splitlines()[-1])
    (builders / "tiny_models.py").unlink()  # a received folder: the user's code is not here
    code = textwrap.dedent(
        f"""
        import sys
        from actreg_cli.cli import app
        for folder in ({str(study)!r}, {str(run_dir)!r}):
            try:
                app(["report", folder])
            except SystemExit as exc:
                assert exc.code == 0, exc.code
        print(sorted(m for m in ("keras", "tensorflow") if m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=builders, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    report = (run_dir / "report.md").read_text()
    assert "Keras model tiny_models.py:sequential()" in report
    assert "the model's own penalties, kept: hidden kernel L2(l2=0.5)" in report


def test_cell_hashes_cover_the_model_and_leave_yaml_models_as_they_were(tmp_path: Path) -> None:
    from conftest import CONFIGS

    from actreg_cli.study.sweep.grid import hashed_config
    from actreg_cli.study.sweep.store import cell_hash

    # YAML models hash as before these fields existed: their stored cells stay valid
    yaml_model = hashed_config(load_experiment(CONFIGS / "circles_l1_before_relu.yaml"))["model"]
    assert not {"keras", "args", "keras_file", "probe"} & set(yaml_model)
    path = own_config(tmp_path)
    hashes = {cell_hash(load_experiment(path, [f"model.args.units={n}"]), "keras") for n in (2, 3)}
    assert len(hashes) == 2


def test_an_edited_builder_or_saved_model_gets_new_cell_hashes(builders: Path) -> None:
    """A sweep's cells are keyed by the builder's file (or the saved model's bytes) too: an edit
    recomputes them instead of reusing results of the old model; an unchanged file keeps them."""
    from actreg_cli.study.sweep.store import cell_hash

    path = own_config(builders)
    before = cell_hash(load_experiment(path), "keras")
    assert cell_hash(load_experiment(path), "keras") == before
    source = builders / "tiny_models.py"
    source.write_text(source.read_text(encoding="utf-8") + "\n# an edit\n", encoding="utf-8")
    assert cell_hash(load_experiment(path), "keras") != before
    saved = builders / "saved.keras"
    saved.write_bytes(b"first version")
    path = own_config(builders, name="saved", model={"keras_file": "saved.keras"})
    first = cell_hash(load_experiment(path), "keras")
    saved.write_bytes(b"second version, another size")
    assert cell_hash(load_experiment(path), "keras") != first
