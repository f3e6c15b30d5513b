"""The import graph keeps its layers and has no cycles (import-linter, contracts in pyproject.toml)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _installed_view(tmp_path: Path) -> Path:
    """The package as it installs (``package-dir``: indexes/ -> mmsearch.indexes, cli/ -> mmsearch.cli), as symlinks.

    import-linter finds modules by walking the package's folder, where the editable install's
    mapped subpackages are not.
    """
    view = tmp_path / "view" / "mmsearch"
    view.mkdir(parents=True)
    for entry in (ROOT / "mmsearch").iterdir():
        if entry.name != "__pycache__":
            os.symlink(entry, view / entry.name)
    os.symlink(ROOT / "indexes", view / "indexes")
    os.symlink(ROOT / "cli", view / "cli")
    return view.parent


def test_import_contracts_hold(tmp_path):
    linter = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(linter).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(_installed_view(tmp_path))}
    proc = subprocess.run(
        [linter, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "3 kept" in proc.stdout  # every contract ran


def test_the_contracts_catch_an_upward_import(tmp_path):
    """A module below the API that imports the CLI breaks the layers contract: the check can fail."""
    view = _installed_view(tmp_path)
    store = view / "mmsearch" / "store.py"
    store.unlink()
    store.write_text((ROOT / "mmsearch" / "store.py").read_text(encoding="utf-8") + "\nfrom mmsearch.cli import app  # noqa\n")
    linter = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(linter).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(view)}
    proc = subprocess.run(
        [linter, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "mmsearch.store -> mmsearch.cli" in proc.stdout, proc.stdout[-3000:]
