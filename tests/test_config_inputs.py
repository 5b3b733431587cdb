"""Config files, `--set` and `--grid` as a hostile user types them: YAML merge keys,
names too long for a folder, non-ASCII digits, odd custom functions, endless or huge files;
and property-based tests (hypothesis) that whatever is typed ends in a config or in exit 2 with
a message, never a traceback, never a file written."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from conftest import BOUNDED, assert_exit_2, invoke, write_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from actreg_cli.config import ConfigError, load_experiment, load_sweep

TINY = {"model": {"hidden_units": [4]}, "training": {"epochs": 2, "repeats": 1}}

# --- class 5: YAML merge keys -------------------------------------------------------------------


def test_yaml_merge_keys_are_valid_yaml_again(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(
        "model: {hidden_units: [4]}\n"
        "regularizers:\n"
        "  - &l1 {target: activity, norm: l1, strength: 1.0e-3}\n"
        "  - <<: *l1\n"
        "    target: kernel\n"
        "training: {epochs: 2}\n",
        encoding="utf-8",
    )
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
    config = load_experiment(path)
    assert [r.target.value for r in config.regularizers] == ["activity", "kernel"]
    assert config.regularizers[1].strength == 1e-3  # merged from the anchor


def test_duplicate_keys_beside_a_merge_key_are_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "regularizers:\n  - &r {strength: 1.0e-3}\n  - <<: *r\n    norm: l2\n    norm: l1\n"
    )
    assert_exit_2(invoke("validate", path), "duplicate key 'norm'")


# --- class 6: names that cannot name a folder ----------------------------------------------------


def test_a_300_character_run_name_trains_into_a_shortened_folder(tmp_path: Path) -> None:
    name = "n" * 300
    config = write_yaml(tmp_path / "long.yaml", {**TINY, "name": name})
    runs = tmp_path / "runs"
    result = invoke("run", config, "--engine", "cpu", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    (folder,) = runs.iterdir()
    assert len(folder.name) < 255 and folder.name.startswith("n" * 100)
    assert yaml.safe_load((folder / "config.yaml").read_text())["name"] == name  # kept whole


def test_a_300_character_sweep_name_is_bad_input_in_validate_and_sweep(tmp_path: Path) -> None:
    sweep = {"name": "s" * 300, "base": TINY, "grid": {"training.seed": [0, 1]}}
    path = write_yaml(tmp_path / "sweep.yaml", sweep)
    assert_exit_2(invoke("validate", path), "at most 200 characters")
    runs = tmp_path / "runs"
    assert_exit_2(invoke("sweep", path, "--runs-dir", runs), "at most 200 characters")
    assert not runs.exists() or not any(runs.iterdir())


def test_a_file_where_the_sweep_folder_goes_is_bad_input(tmp_path: Path) -> None:
    sweep = {"name": "sw", "base": TINY, "grid": {"training.seed": [0]}, "baseline": False}
    path = write_yaml(tmp_path / "sweep.yaml", sweep)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "sw").write_text("not a folder")
    assert_exit_2(invoke("sweep", path, "--runs-dir", runs, "--engine", "cpu"), "is a file")
    assert sorted(p.name for p in runs.iterdir()) == ["sw"]
    assert (runs / "sw").read_text() == "not a folder"


# --- class 7: tracebacks left from before ---------------------------------------------------------


@pytest.mark.parametrize("key", ["regularizers.²", "regularizers.٣", "model.hidden_units.¹"])
def test_non_ascii_digits_in_a_key_are_bad_input(tmp_path: Path, key: str) -> None:
    config = write_yaml(tmp_path / "c.yaml", TINY)
    sweep = {"name": "s", "base": TINY, "grid": {"training.seed": [0]}, "baseline": False}
    sweep_path = write_yaml(tmp_path / "s.yaml", sweep)
    runs = tmp_path / "runs"
    assert_exit_2(
        invoke("run", config, "--set", f"{key}=1", "--runs-dir", runs), "must be an index"
    )
    assert_exit_2(
        invoke("sweep", sweep_path, "--grid", f"{key}=1,2", "--runs-dir", runs),
        "must be an index",
    )
    assert not runs.exists()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("return None", ["must return a real number", "None"]),
        ("return 1 + 2j", ["must return a real number", "(1+2j)"]),
        ("return 'abc'", ["must return a real number"]),
    ],
)
def test_a_custom_function_returning_no_real_number_is_bad_input(
    tmp_path: Path, monkeypatch, body: str, words: list[str]
) -> None:
    module = f"oddreg_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{module}.py").write_text(f"def fn(x):\n    {body}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    regs = [{"target": "activity", "norm": "custom", "function": f"{module}:fn"}]
    config = write_yaml(tmp_path / "c.yaml", {**TINY, "regularizers": regs})
    assert_exit_2(invoke("validate", config), "c.yaml", "regularizers.0", *words)


# --- class 8: endless and huge inputs -------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused_at_once(tmp_path: Path, device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    runs = tmp_path / "runs"
    started = time.monotonic()
    assert_exit_2(invoke("validate", device), device, "not a regular file")
    assert_exit_2(invoke("run", device, "--runs-dir", runs), device, "not a regular file")
    sweep = write_yaml(tmp_path / "s.yaml", {"base": device, "grid": {"training.seed": [0]}})
    assert_exit_2(invoke("sweep", sweep, "--runs-dir", runs), device, "not a regular file")
    assert time.monotonic() - started < 10
    assert not runs.exists()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert_exit_2(invoke("validate", fifo), "pipe.yaml", "not a regular file")


def test_a_config_larger_than_10_mb_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(11_000_000)  # sparse: 11 MB of zero bytes, nothing really written
    assert_exit_2(invoke("validate", big), "big.yaml", "at most 10 MB")


def test_a_config_that_is_not_utf8_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    assert_exit_2(invoke("validate", path), "latin.yaml", "not UTF-8")


# --- property-based: generated configs, --set and --grid strings ----------------------------------

KEYS = ["name", "data", "model", "regularizers", "training", "grid", "base", "baseline", "x"]
INNER_KEYS = [
    "name", "hidden_units", "activation", "epochs", "repeats", "seed", "strength", "norm",
    "target", "layer", "batch_size", "learning_rate", "noise", "n_samples", "0", "<<",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["relu", "l1", "activity", "custom", "circles", "1e-4", "/dev/zero"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(INNER_KEYS), inner, max_size=3),
    ),
    max_leaves=12,
)


@BOUNDED
@given(data=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_generated_configs_validate_or_exit_2(tmp_path: Path, data: dict) -> None:
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("validate", path)
    assert result.exit_code in (0, 2), result.output
    assert isinstance(result.exception, SystemExit) or result.exception is None, result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "error:" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@BOUNDED
@given(text=st.text(max_size=200))
def test_generated_yaml_text_validates_or_exits_2(tmp_path: Path, text: str) -> None:
    path = tmp_path / "text.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = invoke("validate", path)
    assert result.exit_code in (0, 2), result.output
    assert isinstance(result.exception, SystemExit) or result.exception is None, result.exception


KEY_TEXT = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.one_of(st.sampled_from(["regularizers", "model", "training", "data", "layers"]),
                  st.sampled_from(INNER_KEYS), st.text(min_size=1, max_size=3)),
        min_size=1, max_size=4,
    ).map(".".join),
)  # fmt: skip


@BOUNDED
@given(key=KEY_TEXT, value=st.text(max_size=30))
def test_generated_set_items_load_or_raise_a_config_error(tmp_path: Path, key: str, value: str):
    """What `--set KEY=VALUE` does before training (`user_errors` turns ConfigError into exit
    2): a config, or a ConfigError with one line or more; nothing else escapes."""
    path = tmp_path / "c.yaml"
    if not path.exists():
        write_yaml(path, {**TINY, "regularizers": [{"strength": 1.0e-3}]})
    try:
        load_experiment(path, [f"{key}={value}"])
    except ConfigError as exc:
        assert exc.errors and all(isinstance(line, str) and line for line in exc.errors)


@BOUNDED
@given(key=KEY_TEXT, values=st.lists(st.text(max_size=10), min_size=1, max_size=3))
def test_generated_grid_items_load_or_raise_a_config_error(tmp_path: Path, key, values) -> None:
    """What `--grid KEY=V1,V2` does before training: a sweep whose cells all validate, or a
    ConfigError."""
    from actreg_cli.study.sweep.plan import check_sweep

    path = tmp_path / "c.yaml"
    if not path.exists():
        write_yaml(path, {**TINY, "regularizers": [{"strength": 1.0e-3}]})
    try:
        sweep = load_sweep(path, (), [f"{key}={','.join(values)}"])
        check_sweep(sweep, str(path))
    except ConfigError as exc:
        assert exc.errors and all(isinstance(line, str) and line for line in exc.errors)


# A number-shaped value: sign, leading zeros, digits, underscores, dot, exponent, spaces, in any
# mix; the plain decimal ones take read_value's shortcut, the rest go through YAML.
NUMBER_TEXT = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(["", " ", "  "]), st.sampled_from(["", "-", "+"]),
    st.sampled_from(["", "0", "00"]), st.text("0123456789_", max_size=4), st.sampled_from(["", ".", ":"]),
    st.text("0123456789", max_size=3), st.sampled_from(["", "e", "E", "e-", "E+", "e+0"]),
    st.text("0123456789", max_size=2), st.sampled_from(["", " ", " # note", "\t"]),
)  # fmt: skip


@settings(max_examples=1500, deadline=None)  # a pure function, ~0.1 ms an example
@given(text=st.one_of(NUMBER_TEXT, st.text(max_size=12)))
def test_a_typed_value_reads_as_yaml_reads_it(text: str) -> None:
    from actreg_cli.config.yaml_io import _CommandLineLoader, load_yaml_text, read_value

    if not text.strip():
        assert read_value(text) == ""
        return
    plain = text.strip(" ")
    if len(plain) == 1 and not plain.isalnum() and plain != "~":  # `data.decimal=,`
        assert read_value(text) == plain
        return
    try:
        expected = load_yaml_text(text, "command line", loader=_CommandLineLoader)
    except ConfigError as exc:
        with pytest.raises(ConfigError) as caught:
            read_value(text)
        assert caught.value.errors == exc.errors
        return
    got = read_value(text)
    assert type(got) is type(expected)
    assert got == expected or (got != got and expected != expected)  # NaN reads as NaN


@pytest.mark.parametrize(("text", "value"), [(",", ","), ("|", "|"), (";", ";"), ("~", None)])
def test_a_lone_punctuation_character_is_itself(text: str, value) -> None:
    """`--set data.decimal=,` and `--set data.delimiter=|`: YAML would read `,` as an error and
    `|` as an empty text; `~` stays YAML's null."""
    from actreg_cli.config.yaml_io import read_value

    assert read_value(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("64", 64), ("-3", -3), ("0.5", 0.5), ("1e-05", 1e-05), (" 2.5E+3", 2500.0),
     ("010", 8), ("1_000", 1000), (".5", 0.5), ("1:30", 90), ("1e5", 100000.0)],
)  # fmt: skip
def test_typed_numbers_read_as_yaml_1_1_with_plain_exponents(text: str, value) -> None:
    from actreg_cli.config.yaml_io import read_value

    assert read_value(text) == value and type(read_value(text)) is type(value)
