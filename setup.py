"""Build script: compiles the C core through cffi's out-of-line API mode.

It also makes an editable install (``pip install -e .``) immune to a folder
named ``cllm`` in the working directory. setuptools implements an editable
install of this (flat) layout with an import hook that it appends to
``sys.meta_path``, after Python's own path finder; that finder takes any
folder called ``cllm`` on ``sys.path`` (the working directory, for
``python -c`` and the REPL) for a namespace package, so a user who runs Python
from the folder holding a checkout named ``cllm`` got that folder instead of
the package (``module 'cllm' has no attribute 'load'``). The hook here is
a guard in front of the path finder that hands ``cllm`` to setuptools' hook
when the path finder would only find such a folder.
"""
from typing import Any

from setuptools import setup

CMDCLASS: dict = {}

try:  # setuptools >= 64 (PEP 660 editable installs)
    from setuptools.command.editable_wheel import editable_wheel as _editable_wheel
except ImportError:  # pragma: no cover - older setuptools: the legacy .egg-link install
    _editable_wheel = None

_GUARD = "__editable___cllm_guard"
_GUARD_SOURCE = '''"""Installed by cllm's editable install (see cllm's setup.py): the editable
import hook answers for ``cllm`` when the path finder would only find a
folder named ``cllm`` without ``__init__.py`` (a namespace package), e.g. the
folder that holds a checkout; a real ``cllm`` package on ``sys.path`` (a
``PYTHONPATH`` copy) still wins, as it does over an ordinary install."""
import sys
from importlib.machinery import PathFinder


class _NamespaceGuard:
    """Meta path finder placed just before the path finder."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "cllm":
            return None
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.origin is not None:
            return None
        return self.finder.find_spec(fullname, path, target)


def install(finder):
    if finder is None or any(isinstance(f, _NamespaceGuard) for f in sys.meta_path):
        return
    at = sys.meta_path.index(PathFinder) if PathFinder in sys.meta_path else 0
    sys.meta_path.insert(at, _NamespaceGuard(finder))
'''


class _NamespaceSafe:
    """Wraps setuptools' editable strategy: the same files, plus
    :data:`_GUARD_SOURCE` installed by the same ``.pth`` (other strategies,
    e.g. a plain ``.pth`` path entry, pass through unchanged)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __enter__(self) -> "_NamespaceSafe":
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self.inner.__exit__(*exc)

    def __call__(self, wheel: Any, files: Any, mapping: Any) -> Any:
        impl = getattr(self.inner, "get_implementation", None)
        if impl is None:
            return self.inner(wheel, files, mapping)
        parts = list(impl())
        finders = [name[:-3] for name, _ in parts if name.endswith(".py")]
        for name, content in parts:
            if name.endswith(".pth") and len(finders) == 1:
                hook = (f"import {_GUARD}, {finders[0]}; "
                        f"{_GUARD}.install(getattr({finders[0]}, '_EditableFinder', None))\n")
                content = content.rstrip(b"\n") + b"\n" + hook.encode()
            wheel.writestr(name, content)
        if len(finders) == 1:
            wheel.writestr(f"{_GUARD}.py", _GUARD_SOURCE.encode())
        return None


if _editable_wheel is not None:
    class editable_wheel(_editable_wheel):  # type: ignore[misc, valid-type]
        """``editable_wheel`` whose import hook takes precedence over folders
        named ``cllm`` on ``sys.path``."""

        def _select_strategy(self, *args: Any, **kwargs: Any) -> Any:
            return _NamespaceSafe(super()._select_strategy(*args, **kwargs))

    CMDCLASS["editable_wheel"] = editable_wheel


setup(cffi_modules=["cllm/_build.py:ffibuilder"], cmdclass=CMDCLASS)
