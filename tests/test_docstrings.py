"""Docstrings agree with signatures: every public function documents exactly its parameters, in order.

The check reads the numpydoc ``Parameters`` section with ``numpydoc.docscrape.FunctionDoc`` and
compares its names with ``inspect.signature``; ``*args`` and ``**kwargs`` must be documented
under those spellings. ``name1, name2 : type`` entries count as two names.
"""

import importlib
import inspect

import pytest
from numpydoc.docscrape import FunctionDoc

import linalg_lowrank

_EXTRA_PUBLIC = [("linalg_lowrank.audit", "audit_checkpoint")]


def _signature_names(func):
    names = []
    for p in inspect.signature(func).parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            names.append(f"*{p.name}")
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            names.append(f"**{p.name}")
        else:
            names.append(p.name)
    return names


def _documented_names(func):
    names = []
    for param in FunctionDoc(func)["Parameters"]:
        for name in param.name.split(","):
            name = name.strip().replace("\\", "")  # "\*\*kwargs" is how some escape it for RST
            if name:
                names.append(name)
    return names


def parameter_mismatch(func, qualname):
    """None if the docstring's Parameters section names the signature's parameters in order, else why not."""
    if not inspect.getdoc(func):
        return f"{qualname}: no docstring"
    wanted = _signature_names(func)
    documented = _documented_names(func)
    if documented == wanted:
        return None
    missing = [n for n in wanted if n not in documented]
    extra = [n for n in documented if n not in wanted]
    details = []
    if missing:
        details.append(f"undocumented: {missing}")
    if extra:
        details.append(f"documented but not in the signature: {extra}")
    if len(set(documented)) != len(documented):
        details.append("documented more than once: " + str(sorted({n for n in documented if documented.count(n) > 1})))
    if not details:
        details.append("same names in a different order")
    return f"{qualname}: docstring Parameters {documented} do not match the signature {wanted} ({'; '.join(details)})"


def _public_functions():
    out = []
    for name in linalg_lowrank.__all__:
        obj = getattr(linalg_lowrank, name)
        if inspect.isfunction(obj):
            out.append(pytest.param(obj, f"linalg_lowrank.{name}", id=name))
    return out


def test_public_functions_found():
    # Guard against the parametrized test silently collecting nothing.
    assert _public_functions(), "no public functions found in linalg_lowrank.__all__"


@pytest.mark.parametrize(("func", "qualname"), _public_functions())
def test_public_function_parameters_documented(func, qualname):
    problem = parameter_mismatch(func, qualname)
    assert problem is None, problem


@pytest.mark.parametrize(("module", "name"), _EXTRA_PUBLIC)
def test_extra_public_function_parameters_documented(module, name):
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} not importable: {exc}")
    func = getattr(mod, name, None)
    if func is None:
        pytest.skip(f"{module}.{name} does not exist yet")
    problem = parameter_mismatch(func, f"{module}.{name}")
    assert problem is None, problem


# ----------------------------------------------------------------------------------------------
# The check must be able to fail.
# ----------------------------------------------------------------------------------------------


def _documented_right(A, *, tol=1.0, **kwargs):
    """Stand-in.

    Parameters
    ----------
    A : ndarray
        A matrix.
    tol : float, optional
        A tolerance.
    **kwargs
        Passed on.
    """


def _wrong_order(A, *, tol=1.0, maxiter=None):
    """Stand-in.

    Parameters
    ----------
    A : ndarray
        A matrix.
    maxiter : int, optional
        A cap.
    tol : float, optional
        A tolerance.
    """


def _missing_and_extra(A, *, tol=1.0, **kwargs):
    """Stand-in.

    Parameters
    ----------
    A : ndarray
        A matrix.
    rtol : float, optional
        Not a parameter.
    """


def _no_docstring(A):
    pass


def _combined_names(u, v):
    """Stand-in.

    Parameters
    ----------
    u, v : ndarray
        Two vectors.
    """


def test_check_accepts_matching_docstrings():
    assert parameter_mismatch(_documented_right, "_documented_right") is None
    assert parameter_mismatch(_combined_names, "_combined_names") is None


def test_check_rejects_wrong_order():
    problem = parameter_mismatch(_wrong_order, "_wrong_order")
    assert problem is not None
    assert "_wrong_order" in problem and "different order" in problem


def test_check_rejects_missing_and_extra_names():
    problem = parameter_mismatch(_missing_and_extra, "_missing_and_extra")
    assert problem is not None
    assert "_missing_and_extra" in problem
    assert "undocumented: ['tol', '**kwargs']" in problem
    assert "not in the signature: ['rtol']" in problem


def test_check_rejects_missing_docstring():
    assert parameter_mismatch(_no_docstring, "_no_docstring") == "_no_docstring: no docstring"


def test_public_test_fails_on_a_wrong_function():
    with pytest.raises(AssertionError, match="_wrong_order"):
        test_public_function_parameters_documented(_wrong_order, "_wrong_order")
