"""The C core's shape, the counterpart of test_structure.py for csrc/.

A *unit* is a source file and its header taken together (``gemm/gemm.c`` +
``gemm/gemm.h`` is the unit ``gemm/gemm``; a header without a ``.c`` is a
unit of its own). Every ``#include "..."`` in csrc/ is an arrow between units
(includes of the unit's own header, and of ``cllm.h``, the public API header
anyone may include, are not arrows). The tests assert:

(a) no cycle among the units;
(b) no arrow from a lower layer directory into a higher one. Layers, lowest
    first: ``runtime/`` < ``kernels/`` < ``gemm/`` < ``model/``;
    ``tokenizer/`` uses only ``runtime/``;
(c) every non-static function a ``.c`` file defines is declared in a header
    of its own directory, or exported with ``CLLM_EXPORT`` and declared in
    ``cllm.h``. With the build's ``-Werror=implicit-function-declaration``
    (cllm/_build.py), a call into another file must see a declaration, so
    calls go through headers and the include graph is the call graph;
(d) the same two rules on the call graph itself, read from the sources: a
    call from one ``.c`` file to a function another ``.c`` file defines is an
    arrow between their units (this sees calls through ``cllm.h`` and through
    a header shared by several files, which the include graph shows only as
    arrows into that header); cycles are sought in the include and call
    arrows together (a unit that includes another's header and is called by
    it is a circle too).

Failures name the cycle or the offending arrow (file, line, target).
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

#: directory -> the directories its files may include or call into
ALLOWED = {
    "runtime": {"runtime"},
    "kernels": {"runtime", "kernels"},
    "gemm": {"runtime", "kernels", "gemm"},
    "model": {"runtime", "kernels", "gemm", "model"},
    "tokenizer": {"runtime", "tokenizer"},
}
PUBLIC = "cllm.h"

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"', re.M)


def _files(csrc: str) -> List[str]:
    """Every .c / .h under csrc, relative to it, '/'-separated."""
    out = []
    for d, _, names in os.walk(csrc):
        for n in names:
            if n.endswith((".c", ".h")):
                out.append(os.path.relpath(os.path.join(d, n), csrc).replace(os.sep, "/"))
    return sorted(out)


def _read(csrc: str, rel: str) -> str:
    with open(os.path.join(csrc, rel), encoding="utf-8") as f:
        return f.read()


def _strip_comments(text: str) -> str:
    """Comments and string / char literals blanked (line breaks kept, so
    line numbers stay valid)."""
    def blank(m: re.Match) -> str:
        s = m.group(0)
        if s.startswith("/"):
            return re.sub(r"[^\n]", " ", s)
        return s[0] + re.sub(r"[^\n]", " ", s[1:-1]) + s[-1]
    return re.sub(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', blank, text, flags=re.S)


def unit(rel: str) -> str:
    """The unit of a file: its path without the extension."""
    return rel.rsplit(".", 1)[0]


def layer(rel: str) -> str:
    """The layer directory of a file ('' for csrc/ itself)."""
    return rel.split("/")[0] if "/" in rel else ""


def includes(csrc: str) -> List[Tuple[str, int, str]]:
    """(file, line, included file) for every quoted include, resolved like the
    compiler: next to the including file first, then from csrc/ (the one
    include directory). An include that resolves nowhere fails."""
    files = set(_files(csrc))
    out = []
    for rel in sorted(files):
        text = _read(csrc, rel)
        for m in _INCLUDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            name = m.group(1)
            here = os.path.normpath(os.path.join(os.path.dirname(rel), name)).replace(os.sep, "/")
            target = here if here in files else name if name in files else None
            assert target is not None, f"{rel}:{line}: #include \"{name}\" resolves to no file in csrc/"
            out.append((rel, line, target))
    return out


def _cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of graph as [a, b, ..., a], or None."""
    state: Dict[str, int] = {}

    def visit(n: str, stack: List[str]) -> Optional[List[str]]:
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d, stack + [d])
                if found:
                    return found
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n, [n])
            if found:
                return found
    return None


def _why(cycle: List[str], arrows: Dict[Tuple[str, str], str]) -> str:
    return " -> ".join(cycle) + "\n  " + "\n  ".join(arrows[(a, b)] for a, b in zip(cycle, cycle[1:]))


def include_arrows(csrc: str) -> Dict[Tuple[str, str], str]:
    """(unit, unit) -> where the first include making that arrow is."""
    out: Dict[Tuple[str, str], str] = {}
    for rel, line, target in includes(csrc):
        a, b = unit(rel), unit(target)
        if a != b and target != PUBLIC:
            out.setdefault((a, b), f'{rel}:{line} includes "{target}"')
    return out


def check_cycles(arrows: Dict[Tuple[str, str], str], what: str) -> List[str]:
    """One message per cycle found (each found cycle's closing arrow is then
    set aside to look for the next, up to 20)."""
    graph: Dict[str, Set[str]] = {}
    for a, b in arrows:
        graph.setdefault(a, set()).add(b)
    out = []
    while len(out) < 20:
        c = _cycle(graph)
        if not c:
            break
        out.append(f"{what} cycle between units: {_why(c, arrows)}")
        graph[c[-2]].discard(c[-1])
    return out


def check_layers(arrows: Dict[Tuple[str, str], str], what: str) -> List[str]:
    bad = []
    for (a, b), where in sorted(arrows.items()):
        la, lb = layer(a), layer(b)
        if la and lb and lb not in ALLOWED.get(la, {la}):
            bad.append(f"{what} arrow {a} -> {b} goes from {la}/ up (or across) into {lb}/: {where}")
    return bad


# ------------------------------------------------------------- functions
_DEF = re.compile(r"([A-Za-z_][\w \t\n*]*?)\b([A-Za-z_]\w*)\s*\(([^;{}()]*(?:\([^;{}()]*\)[^;{}()]*)*)\)\s*\{\s*\}")


def _top_level(text: str) -> str:
    """text with comments, literals and preprocessor lines blanked and the
    inside of every top-level brace pair removed but for its line breaks
    ('{...}' -> '{}')."""
    text = _strip_comments(text)
    text = re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.M)
    out, depth = [], 0
    for ch in text:
        if ch == "{":
            if depth == 0:
                out.append("{")
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                out.append("}")
        elif depth == 0 or ch == "\n":   # line breaks kept: line numbers stay valid
            out.append(ch)
    return "".join(out)


def _object_macros(csrc: str) -> Dict[str, Set[str]]:
    """NAME -> the words of its body, for every object-like #define in csrc
    (e.g. ``#define AVX2_FN __attribute__((target("avx2"))) static``)."""
    out: Dict[str, Set[str]] = {}
    for rel in _files(csrc):
        for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+([^\n]*)", _read(csrc, rel), re.M):
            out.setdefault(m.group(1), set()).update(re.findall(r"\w+", m.group(2)))
    return out


def definitions(csrc: str, rel: str) -> List[Tuple[str, bool, bool, int]]:
    """(name, static, exported, line) of each function rel defines; macros in
    the declaration specifiers are expanded (one that says ``static`` makes
    the function static)."""
    top = _top_level(_read(csrc, rel))
    macros = _object_macros(csrc)
    out = []
    for m in _DEF.finditer(top):
        spec, name = m.group(1), m.group(2)
        spec = re.split(r"[;}]", spec)[-1]
        words = set(re.findall(r"\w+", spec))
        for w in list(words):
            words |= macros.get(w, set()) if w != "CLLM_EXPORT" else set()
        if name in ("if", "for", "while", "switch", "return", "sizeof") or not words:
            continue
        out.append((name, "static" in words, "CLLM_EXPORT" in words, top.count("\n", 0, m.start(2)) + 1))
    return out


def _declared_in(csrc: str, headers: List[str], name: str) -> bool:
    """name has a prototype in one of headers, written out or generated by
    an X-macro list (``#define OP(name, ...) ret cllm_ref_##name params;``
    over the ``OP(layernorm_fwd, ...)`` lines of the list it includes)."""
    pat = re.compile(r"\b" + re.escape(name) + r"\s*\([^;{}]*\)[^;{}]*;")
    for h in headers:
        text = _read(csrc, h)
        if pat.search(_strip_comments(text)):
            return True
        for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+(\w+)\((\w+)[^)]*\)[^\n]*?\b(\w+)##\2\b[^\n]*;", text,
                             re.M):
            macro, prefix = m.group(1), m.group(3)
            if not name.startswith(prefix):
                continue
            listed = re.compile(r"^[ \t]*" + macro + r"\(\s*" + re.escape(name[len(prefix):]) + r"\s*,", re.M)
            if any(listed.search(_read(csrc, g)) for g in _files(csrc) if g.endswith(".h")):
                return True
    return False


def check_declarations(csrc: str) -> List[str]:
    files = _files(csrc)
    bad = []
    for rel in files:
        if not rel.endswith(".c"):
            continue
        own = [h for h in files if h.endswith(".h") and layer(h) == layer(rel)]
        for name, static, exported, line in definitions(csrc, rel):
            if static:
                continue
            if exported:
                if not _declared_in(csrc, [PUBLIC], name):
                    bad.append(f"{rel}:{line}: {name} is CLLM_EXPORT but not declared in {PUBLIC}")
            elif not _declared_in(csrc, own, name):
                bad.append(f"{rel}:{line}: {name} is neither static, nor declared in a header of "
                           f"{layer(rel) or 'csrc'}/, nor CLLM_EXPORT")
    return bad


def call_arrows(csrc: str) -> Dict[Tuple[str, str], str]:
    """(unit, unit) -> the first call from a .c file to a non-static function
    another .c file defines."""
    owner: Dict[str, str] = {}
    files = [f for f in _files(csrc) if f.endswith(".c")]
    for rel in files:
        for name, static, _, _ in definitions(csrc, rel):
            if not static:
                owner[name] = rel
    out: Dict[Tuple[str, str], str] = {}
    for rel in files:
        text = _strip_comments(_read(csrc, rel))
        local = {name for name, *_ in definitions(csrc, rel)}   # a static namesake shadows
        for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", text):
            callee = owner.get(m.group(1))
            if callee and m.group(1) not in local:
                line = text.count("\n", 0, m.start()) + 1
                out.setdefault((unit(rel), unit(callee)), f"{rel}:{line} calls {m.group(1)} ({callee})")
    return out


# ----------------------------------------------------------------- tests
def test_no_include_cycles():
    bad = check_cycles(include_arrows(CSRC), "include")
    assert not bad, "\n".join(bad)


def test_every_directory_has_a_place_in_the_layer_order():
    dirs = {layer(f) for f in _files(CSRC)} - {""}
    assert dirs <= set(ALLOWED), f"csrc/ directories missing from ALLOWED: {sorted(dirs - set(ALLOWED))}"
    assert {f for f in _files(CSRC) if not layer(f)} == {PUBLIC}


def test_no_include_from_a_lower_layer_into_a_higher_one():
    bad = check_layers(include_arrows(CSRC), "include")
    assert not bad, "\n".join(bad)


def test_every_non_static_function_is_declared_in_a_header():
    bad = check_declarations(CSRC)
    assert not bad, "\n".join(bad)


def test_call_graph_has_no_cycles_and_no_upward_calls():
    calls = call_arrows(CSRC)
    assert len(calls) > 20, "few calls between files found: the scanner is broken"
    both = dict(calls)
    for k, v in include_arrows(CSRC).items():
        both.setdefault(k, v)
    bad = check_cycles(both, "include/call") + check_layers(calls, "call")
    assert not bad, "\n".join(bad)


def test_build_fails_on_implicit_function_declarations():
    from cllm import _build
    assert "-Werror=implicit-function-declaration" in _build._cflags


# ------------------------------------------------- the checker on a sample
def _tree(tmp_path, files: Dict[str, str]) -> str:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


def test_checker_names_the_cycle_the_arrow_and_the_undeclared_function(tmp_path):
    csrc = _tree(tmp_path, {
        "cllm.h": "int cllm_pub(void);\n",
        "runtime/r.h": "int r_fn(void);\n",
        "runtime/r.c": '#include "r.h"\n#include "kernels/k.h"\nint r_fn(void) { return k_fn(); }\n',
        "kernels/k.h": "int k_fn(void);\n",
        "kernels/k.c": '#include "k.h"\n#include "runtime/r.h"\n'
                       "int k_fn(void) { return r_fn(); }\n"
                       "int k_hidden(int a) { return a; }\n"
                       "static int k_local(void) { return 0; }\n"
                       "__attribute__((visibility(\"default\"))) int cllm_pub(void) { return k_local(); }\n"
                       "#define CLLM_EXPORT\nCLLM_EXPORT int cllm_missing(void) { return 1; }\n",
        "model/m.c": '#include "cllm.h"\nint main_like(void);\n',
    })
    arrows = include_arrows(csrc)
    cyc = check_cycles(arrows, "include")
    assert len(cyc) == 1 and "kernels/k -> runtime/r -> kernels/k" in cyc[0], cyc
    assert 'runtime/r.c:2 includes "kernels/k.h"' in cyc[0]
    up = check_layers(arrows, "include")
    assert up == ['include arrow runtime/r -> kernels/k goes from runtime/ up (or across) into kernels/: '
                  'runtime/r.c:2 includes "kernels/k.h"'], up
    decl = check_declarations(csrc)
    assert any("kernels/k.c:4: k_hidden is neither static" in b for b in decl), decl
    assert any("cllm_missing is CLLM_EXPORT but not declared in cllm.h" in b for b in decl), decl
    assert any("cllm_pub" in b for b in decl)   # exported by attribute only: not CLLM_EXPORT
    assert not any("k_local" in b or "k_fn" in b or "r_fn" in b for b in decl), decl
    calls = check_cycles(call_arrows(csrc), "call")
    assert len(calls) == 1 and "runtime/r.c:3 calls k_fn (kernels/k.c)" in calls[0], calls


@pytest.mark.parametrize("rel", ["model/decode.c", "gemm/gemm.c", "kernels/qmatvec.c", "runtime/spheres.c"])
def test_definitions_are_found(rel):
    names = {n for n, *_ in definitions(CSRC, rel)}
    assert len(names) >= 3, (rel, names)
