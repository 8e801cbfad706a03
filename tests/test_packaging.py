"""The wheel holds what an installed funcml needs (embedded data, py.typed, the cpu backend's C loops where
a C compiler exists) and nothing of the tooling."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import funcml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")  # a copy: setuptools writes build/ and *.egg-info beside the sources
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "funcml", source / "funcml", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=source, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("funcml-*.whl")
    return path


def test_the_wheel_has_the_version_the_data_and_the_type_marker(wheel):
    assert wheel.name.startswith(f"funcml-{funcml.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"funcml/py.typed", "funcml/data/assets/breastmnist.npz", "funcml/data/assets/ATTRIBUTION.md"} <= set(names)
    assert not [n for n in names if "docgen" in n or n.startswith(("tests/", "benchmarks/", "examples/", "tools/"))]
    loops = [n for n in names if n.startswith("funcml/backends/_cpu_loops") and n.endswith(".so")]
    assert len(loops) == (1 if shutil.which("cc") or shutil.which("gcc") else 0), names
    aten = [n for n in names if n.startswith("funcml/backends/_aten_sgemm") and n.endswith(".so")]
    assert len(aten) == (1 if shutil.which("c++") or shutil.which("g++") else 0), names
    assert not [n for n in names if n.endswith((".c", ".cpp"))]   # the sources build the libraries; not installed
    metadata = zipfile.ZipFile(wheel).read(f"funcml-{funcml.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {funcml.__version__}\n" in metadata


def test_the_unpacked_wheel_runs_and_reads_its_embedded_data(wheel, tmp_path):
    """Outside the checkout, with only the wheel's files on the path: --version and the demo data."""
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    code = ("import funcml, sys; from funcml.data import load_signals; s = load_signals('demo'); "
            "assert funcml.__file__.startswith(sys.argv[1]), funcml.__file__; "
            "from funcml.backends import native, tiled; assert native.available() == bool(sys.argv[2]); "
            "assert (tiled.aten_blas() is not None) == bool(sys.argv[3]); "
            "print(len(s), s.signal_shape)")
    names = zipfile.ZipFile(wheel).namelist()
    built = any(n.startswith("funcml/backends/_cpu_loops") for n in names)
    aten = any(n.startswith("funcml/backends/_aten_sgemm") for n in names)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site"), "1" if built else "", "1" if aten else ""],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "780"
    proc = subprocess.run([sys.executable, "-m", "funcml", "--version"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"funcml, version {funcml.__version__}"
