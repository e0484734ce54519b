"""Without the ``video`` extra: ``emmafuse video`` and ``Fuser.fuse_video`` say what to install.
(PyAV's absence is simulated, so this runs whether or not it is installed.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from emmafuse.cli import main
from emmafuse.errors import MissingExtraError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def no_av(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError


def test_cli_names_the_extra_in_one_line(no_av, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert main(["video", "ir.mp4", "vis.mp4", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("emmafuse video: error: ")
    assert "pip install 'emmafuse[video]'" in err and "Traceback" not in err
    assert not out.exists()


def test_api_raises_a_library_error_naming_the_extra(no_av, fuser, tmp_path):
    with pytest.raises(MissingExtraError, match=r"pip install 'emmafuse\[video\]'") as info:
        fuser.fuse_video("ir.mp4", "vis.mp4", tmp_path / "o.mp4")
    assert info.value.extra == "video" and isinstance(info.value, ImportError)
    assert list(tmp_path.iterdir()) == []


def test_the_extras_list_pyav():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("av") for req in extras["video"])
    assert any(req.startswith("av") for req in extras["dev"])  # CI installs .[dev,train]: video tests run
