"""The decorator every lifecycle step uses: the project's image, nothing installed at run time."""

import os
from collections.abc import Callable

# Imported for its effect in a running step: it installs the hook that records why the
# step failed (every step module imports this one).
import kfp_lifecycle.errors  # noqa: F401
from kfp_lifecycle.image import image

# kfp's executor sets this while a step runs; kfp.dsl then has no `component` decorator.
# The step's module is imported there for its plain functions, so the wrapper stays plain.
_IN_RUNNING_STEP = os.environ.get("_KFP_RUNTIME") == "true"


def component(func: Callable) -> Callable:
    if _IN_RUNNING_STEP:
        return func
    from kfp import dsl

    return dsl.component(func, base_image=image(), install_kfp_package=False)
