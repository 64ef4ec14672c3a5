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
            if isinstance(value, types.ModuleType)
            and (value.__name__.endswith("kernels") or value.__name__ == "linalg_lowrank._krylov")
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


PACKAGE_DIR = TEST_DIR.parent / "linalg_lowrank"


def _public_kernels():
    """``module.name`` of every public function the package decorates with ``@jit``, read from the source.

    Read with ``ast`` rather than by importing: under NUMBA_DISABLE_JIT=1 a kernel is a plain function.
    """
    import ast

    found = []
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Name) and target.id in ("jit", "njit"):
                    found.append(f"{path.stem}.{node.name}")
    return found


def test_every_kernel_has_a_numpy_twin_in_reference():
    from tests import reference

    kernels = _public_kernels()
    assert len(kernels) >= 20  # the scan itself works
    assert sorted(set(kernels) - set(reference.TWINS)) == []
    assert sorted(set(reference.TWINS) - set(kernels)) == []  # no twin of a kernel that is gone


def test_every_twin_is_used_by_a_kernel_test():
    from tests import reference

    sources = "\n".join(p.read_text() for p in TEST_DIR.glob("test_*.py"))
    unused = sorted({t.__name__ for t in reference.TWINS.values()} - set(re.findall(r"\breference\.(\w+)\(", sources)))
    assert unused == []
