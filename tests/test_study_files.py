"""Atomic writes: file modes follow the umask, JSON is standard (null, never NaN)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from actreg_cli.study.files import json_float, write_json


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_allows(tmp_path: Path, umask: int, mode: int):
    # The umask is process-wide: set it in a child process, as a user's shell would.
    code = (
        "import os, sys; from pathlib import Path\n"
        f"os.umask({umask})\n"
        "from actreg_cli.study.files import write_text, write_json\n"
        "write_text(Path(sys.argv[1]) / 'a.txt', 'x')\n"
        "write_json(Path(sys.argv[1]) / 'b.json', {'a': 1})\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    for name in ("a.txt", "b.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_json_holds_null_where_a_value_is_not_finite(tmp_path: Path):
    path = write_json(
        tmp_path / "s.json", {"mean": float("nan"), "values": [0.5, float("inf")], "n": 2}
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text

    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    data = json.loads(text, parse_constant=refuse)  # a strict reader accepts the file
    assert data == {"mean": None, "values": [0.5, None], "n": 2}
    assert math.isnan(json_float(data["mean"])) and json_float(data["values"][0]) == 0.5
