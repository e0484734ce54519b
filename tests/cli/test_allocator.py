"""The command line's allocator setting: applied only in the ``emmafuse`` process, with an opt-out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emmafuse.allocator import ALLOCATOR_ENV, wanted

_PROBE = """
import ctypes, sys
from unittest import mock
import emmafuse.cli as cli
calls = []
with mock.patch.object(cli, "tune_for_fusion", side_effect=lambda: calls.append(1) or True):
    sys.argv = ["emmafuse", "--version"]
    try:
        cli.main()
    except SystemExit:
        pass
print("tuned" if calls else "untouched")
"""


def test_opt_out_and_users_own_settings() -> None:
    assert wanted({})
    for value in ("system", "0", "off", "False"):
        assert not wanted({ALLOCATOR_ENV: value})
    assert not wanted({"MALLOC_MMAP_MAX_": "65536"})  # the user's own glibc settings win
    assert not wanted({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})


@pytest.mark.parametrize(("env", "expected"), [({}, "tuned"), ({ALLOCATOR_ENV: "system"}, "untouched")])
def test_console_entry_tunes_unless_opted_out(env: dict[str, str], expected: str) -> None:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != ALLOCATOR_ENV}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == expected


def test_library_calls_leave_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import emmafuse.cli as cli

    calls: list[int] = []
    monkeypatch.setattr(cli, "tune_for_fusion", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        cli.main(["--version"])  # main(argv) from Python: the caller's process
    assert calls == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_mallopt_applies_on_glibc() -> None:
    import platform

    code = "from emmafuse.allocator import tune_for_fusion; print(tune_for_fusion())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(platform.libc_ver()[0] == "glibc")
