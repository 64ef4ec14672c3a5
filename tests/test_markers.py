"""Every test that calls a numba kernel module carries the ``kernel`` marker.

The test command reruns the marked tests with NUMBA_DISABLE_JIT=1 (pure-Python tracebacks for
logic errors); selecting them by a marker this test enforces means a new kernel test cannot drop
out of that run the way a name pattern would let it.
"""

import importlib
import inspect
import pathlib
import re
import types

import pytest

TEST_DIR = pathlib.Path(__file__).parent


def _kernel_tests_without_marker():
    missing = []
    for path in sorted(TEST_DIR.glob("test_*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        aliases = [
            name
            for name, value in vars(module).items()
            if isinstance(value, types.ModuleType) and value.__name__.endswith(("kernels", "_krylov"))
        ]
        if not aliases:
            continue
        module_marks = getattr(module, "pytestmark", [])
        module_marks = module_marks if isinstance(module_marks, list) else [module_marks]
        for name, fn in vars(module).items():
            if not name.startswith("test_") or not callable(fn):
                continue
            source = inspect.getsource(fn)
            if not any(re.search(rf"\b{alias}\.", source) for alias in aliases):
                continue
            marks = getattr(fn, "pytestmark", []) + module_marks
            if not any(m.name == "kernel" for m in marks):
                missing.append(f"{path.name}::{name}")
    return missing


def test_every_kernel_test_is_marked():
    assert _kernel_tests_without_marker() == []


def test_the_marker_is_registered():
    config = pytest.Config.fromdictargs({}, [])  # a fresh config reads setup.cfg
    assert any(line.startswith("kernel:") for line in config.getini("markers"))
