"""README.md states what the engines guarantee and that custom functions run user code, in the
numbers the tests check (a wording drift fails here)."""

from __future__ import annotations

from conftest import REPO
from test_engines_fused_mlp import LOSS_RTOL


def readme() -> str:
    return " ".join((REPO / "README.md").read_text(encoding="utf-8").split())


def test_engine_guarantee_is_stated_with_the_tested_tolerances():
    text = readme()
    assert "Tested equal" not in text  # the old overclaim
    assert LOSS_RTOL == 1e-3 and "within 1e-3 relative of the Keras engine" in text
    assert "may differ by one boundary sample (1/70 test, 1/30 train)" in text
    assert "distributions of final accuracy are the same" in text
    assert "resumed sweep is byte-identical" in text


def test_readme_says_custom_functions_run_user_code_in_validate_too():
    text = readme()
    assert "A custom `function:` is code you run." in text
    assert "`actreg validate`, `run` and `sweep` all import and execute it" in text
