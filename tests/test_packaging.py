"""What ``pip install hf-prefs`` installs: the wheel built from these sources holds every module, the model-card
templates, the PEP 561 ``py.typed`` marker and the ``hf-prefs`` console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_modules_templates_marker_and_script(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")  # built without isolation: the network may be absent
    src = tmp_path / "src"  # a copy: building in place would write build/ and egg-info into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "hf_prefs", src / "hf_prefs", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("hf_prefs-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "hf_prefs").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    assert {"hf_prefs/py.typed", "hf_prefs/templates/policy.md", "hf_prefs/templates/reward_model.md"} <= names
    assert "hf-prefs = hf_prefs.cli:main" in entry_points
