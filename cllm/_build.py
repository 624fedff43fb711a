"""cffi out-of-line API-mode builder for the C core.

The cdef is taken verbatim from ``csrc/cllm.h`` (the text between the
``CLLM_CDEF_BEGIN`` and ``CLLM_CDEF_END`` markers), so Python and C can never
drift apart: there is one header and one signature set.

Environment knobs (build time):
  CLLM_SANITIZE=address,undefined   build with sanitizers (for test runs)
  CLLM_DEBUG=1                      -O1 -g instead of -O3
"""
import glob
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CSRC = os.path.join(ROOT, "csrc")


def _cdef_text() -> str:
    with open(os.path.join(CSRC, "cllm.h"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"/\* CLLM_CDEF_BEGIN \*/(.*)/\* CLLM_CDEF_END \*/", text, re.S)
    if not m:
        raise RuntimeError("csrc/cllm.h lacks the CLLM_CDEF_BEGIN/END markers")
    body = m.group(1)
    # cffi's parser does not run the preprocessor: drop directives.
    return "\n".join(l for l in body.splitlines() if not l.lstrip().startswith("#"))


def _sources() -> list:
    # Paths relative to the project root, as setuptools requires.
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(CSRC, "**", "*.c"), recursive=True))


ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())

# -Werror=implicit-function-declaration: a call to a function no included
# header declares fails the build, so every cross-file call goes through a
# header and the include graph (tests/test_structure_c.py) is the call graph.
_cflags = ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-pthread",
           "-fno-strict-aliasing", "-fvisibility=hidden"]
_ldflags = ["-pthread", "-lm"]
if os.environ.get("CLLM_DEBUG"):
    _cflags += ["-O1", "-g"]
else:
    _cflags += ["-O3"]
_san = os.environ.get("CLLM_SANITIZE")
if _san:
    _cflags += [f"-fsanitize={_san}", "-fno-omit-frame-pointer", "-g"]
    _ldflags += [f"-fsanitize={_san}"]

ffibuilder.set_source(
    "cllm._cllm",
    '#include "cllm.h"\n',
    sources=_sources(),
    include_dirs=[os.path.relpath(CSRC, ROOT)],
    # rebuild when any header changes (the .c files include them)
    depends=sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(CSRC, "**", "*.h"), recursive=True)),
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
