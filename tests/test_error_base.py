"""Every error class the library defines derives from emmafuse.EmmafuseError (issue 18, item 2)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import emmafuse
from emmafuse import EmmafuseError


def _library_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(emmafuse.__path__, "emmafuse."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def test_every_library_exception_class_derives_from_emmafuse_error() -> None:
    found = []
    for name in _library_modules():
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra (video) that is not installed
            continue
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
                assert issubclass(obj, EmmafuseError), f"{name}.{obj.__name__} does not derive from EmmafuseError"
    assert len(found) >= 12  # the test really looked


def test_existing_except_clauses_keep_working() -> None:
    from emmafuse.errors import MissingExtraError, WeightsError
    from emmafuse.outputs import OutputError

    assert issubclass(WeightsError, ValueError) and issubclass(OutputError, ValueError)
    assert issubclass(MissingExtraError, ImportError)
