"""Run Python with `kfp` unimportable, as a model-serving image without it would be.

`python tests/without_kfp.py -m MODULE ARGS...` runs MODULE as __main__;
`python tests/without_kfp.py -c CODE` runs CODE. Any import of kfp or kfp.* raises.
"""

import importlib.abc
import runpy
import sys

BLOCKED = "kfp is not importable here (tests/without_kfp.py)"


class NoKfp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "kfp" or name.startswith("kfp."):
            raise ImportError(f"{BLOCKED}: import {name}")
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, NoKfp())
    mode, target, *rest = sys.argv[1:]
    if mode == "-c":
        sys.argv = ["-c", *rest]
        exec(compile(target, "<without_kfp>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
