"""Run each gallery example with the warning filters of the test suite (setup.cfg's filterwarnings).

sphinx-gallery prints a warning into the example's page and lets the build pass; numpy's
RuntimeWarning and our ConvergenceWarning mean the example shows a NaN or a non-converged
answer, so they fail the build instead (an example that demonstrates one catches it itself).
Named in docs/conf.py's ``sphinx_gallery_conf["reset_modules"]`` by its import path, so the
configuration stays picklable.
"""

import warnings

_contexts = []


def errors_on_runtime_warnings(gallery_conf, fname, when):
    """Before an example: make the warnings errors; after it: restore the previous filters."""
    if when == "before":
        from linalg_lowrank import ConvergenceWarning

        context = warnings.catch_warnings()
        context.__enter__()
        _contexts.append(context)
        warnings.filterwarnings("error", category=RuntimeWarning)
        warnings.filterwarnings("error", category=ConvergenceWarning)
    elif _contexts:
        _contexts.pop().__exit__(None, None, None)
