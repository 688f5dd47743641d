"""What ``pip install .`` gives a new user (issue 10 items 7 and 10).

Bugs pinned: the install printed setuptools' "``project.license`` as a TOML table is
deprecated" warning three times and shipped no LICENSE although pyproject promised
Apache-2.0; matplotlib was only an extra, so a plain install drew no charts.

Builds a wheel of a copy of the project (pip fetches setuptools into an isolated build
environment, as ``pip install .`` does), so it needs the package index, like
``make test``'s own install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    out = src / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("hybridrec-*.whl")
    return path, done.stdout + done.stderr


def test_the_build_prints_no_licence_warning_and_ships_the_licence(wheel):
    path, output = wheel
    assert "deprecated" not in output.lower(), output
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(zf.read(meta_name).decode())
        (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        text = zf.read(licence).decode()
    assert meta["License-Expression"] == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "hybridrec/sample/README.txt" in names  # the data's own licence travels too


def test_a_plain_install_draws_charts_and_extras_name_object_stores(wheel):
    path, _ = wheel
    with zipfile.ZipFile(path) as zf:
        (meta_name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(zf.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist")
    plain = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("matplotlib") for r in plain), plain
    for extra, package in (("s3", "s3fs"), ("gcs", "gcsfs"), ("azure", "adlfs")):
        assert extra in meta.get_all("Provides-Extra")
        assert any(r.startswith(package) and f'extra == "{extra}"' in r for r in requires)
