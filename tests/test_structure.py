"""The package's shape: layers with no import cycles and no upward imports,
every module importable on its own and documented, no module shadowing a
public name, one options table behind the API, the CLI and the trainer state."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import subprocess
import sys

import pytest

import cllm
from cllm.training.options import TrainOptions

PKG = os.path.dirname(cllm.__file__)
ROOT = os.path.dirname(PKG)


def _modules() -> list:
    """Every module of the package as a dotted name below ``cllm`` ("data.corpus")."""
    out = []
    for dp, dn, fn in os.walk(PKG):
        dn[:] = [d for d in dn if d != "__pycache__"]
        rel = os.path.relpath(dp, PKG)
        pkg = "" if rel == "." else rel.replace(os.sep, ".") + "."
        for f in fn:
            if f.endswith(".py"):
                name = f[:-3]
                out.append(pkg[:-1] if name == "__init__" and pkg else pkg + name)
    return sorted(m for m in out if m not in ("__init__", "__main__"))


MODULES = _modules()

#: The layers, lowest first. A module may import its own layer or lower ones,
#: never a higher one; ``training`` and ``inference`` are siblings that do not
#: import each other. The top-level ``cllm`` facade and ``__main__`` sit above all.
LAYERS = [
    {"errors", "_native", "_build", "config", "precision", "hardware", "progress"},
    {"io"},
    {"data"},
    {"model"},
    {"training", "inference"},
    {"server"},
    {"cli"},
]


def _layer(mod: str) -> int:
    top = mod.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"cllm.{mod} belongs to no layer: add its package to LAYERS in {__file__}")


def _path(mod: str) -> str:
    p = os.path.join(PKG, *mod.split("."))
    return os.path.join(p, "__init__.py") if os.path.isdir(p) else p + ".py"


def _resolve(mod: str, node: ast.ImportFrom) -> list:
    """The cllm modules (dotted, below ``cllm``) an ImportFrom in ``mod`` names."""
    is_pkg = _path(mod).endswith("__init__.py")
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        if node.level > 1:
            base = base[:len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    elif (node.module or "") == "cllm" or (node.module or "").startswith("cllm."):
        prefix = node.module[len("cllm."):] if node.module != "cllm" else ""
    else:
        return []
    out = []
    for a in node.names:
        cand = f"{prefix}.{a.name}" if prefix else a.name
        if cand in MODULES:
            out.append(cand)
        elif prefix in MODULES:
            out.append(prefix)
    return out


def _imports(mod: str) -> set:
    """cllm modules imported anywhere in ``mod`` (top level or inside functions)."""
    tree = ast.parse(open(_path(mod), encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out.update(_resolve(mod, node))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cllm.") and a.name[5:] in MODULES:
                    out.add(a.name[5:])
    # a package's own __init__ is not an import of the package by its modules
    return {m for m in out if m != mod and not mod.startswith(m + ".")}


def test_no_import_cycles():
    graph = {m: _imports(m) for m in MODULES}
    state = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_no_upward_or_sideways_imports():
    bad = []
    for m in MODULES:
        for d in _imports(m):
            lm, ld = _layer(m), _layer(d)
            if ld > lm or (ld == lm and lm > 0 and m.split(".")[0] != d.split(".")[0]):
                bad.append(f"cllm.{m} (layer {lm}) imports cllm.{d} (layer {ld})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_structure_test_sees_the_imports():
    # the checks above are only as good as the import graph: spot-check it
    assert "model.gpt" in _imports("training.loop")
    assert "data.tokenizer" in _imports("model.checkpoint")
    assert "errors" in _imports("cli.main")
    assert "model.decoder" in _imports("inference.engine")


def test_no_module_shadows_a_public_name():
    """``cllm.train`` is the function: no submodule or subpackage of ``cllm``
    has the name of a public attribute (importing it would rebind the name)."""
    clash = [n for n in cllm.__all__ if os.path.exists(os.path.join(PKG, n + ".py"))
             or os.path.isdir(os.path.join(PKG, n))]
    assert not clash, clash
    r = subprocess.run([sys.executable, "-c", "import cllm.training.loop, cllm.model.gpt, cllm, inspect; "
                        "assert callable(cllm.train) and 'out_dir' in inspect.signature(cllm.train).parameters"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("mod", [m for m in MODULES if m not in ("_build",)])
def test_each_module_imports_alone(mod):
    r = subprocess.run([sys.executable, "-c", f"import cllm.{mod}"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_every_module_says_what_it_owns():
    for m in MODULES + ["__main__"]:
        path = _path(m) if m != "__main__" else os.path.join(PKG, "__main__.py")
        doc = ast.get_docstring(ast.parse(open(path, encoding="utf-8").read()))
        assert doc and len(doc) > 20, m


def test_every_option_reaches_api_cli_and_state():
    sig = inspect.signature(cllm.train)
    from cllm.cli.main import build_parser
    p = build_parser()
    train_p = p._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train_p._actions}
    for f in dataclasses.fields(TrainOptions):
        assert f.name in sig.parameters, f.name
        assert sig.parameters[f.name].default == TrainOptions().kwargs()[f.name]
        assert f.name in cllm.train.__doc__
        if f.metadata["cli"]:
            assert f.name in dests, f.name
        if f.metadata["saved"]:
            assert f.name in TrainOptions().saved()
    for name in ("beta1", "beta2", "eps", "min_lr_ratio"):
        assert name in dests and name in sig.parameters


def test_cli_flags_parse_into_options():
    from cllm.cli.main import build_parser
    a = build_parser().parse_args(["train", "src", "--beta1", "0.8", "--beta2", "0.99", "--eps", "1e-6",
                                   "--min-lr-ratio", "0.2", "-e", ".py", "-e", ".c", "-q", "-v",
                                   "--out", "o", "--max-steps", "3"])
    o = TrainOptions.from_namespace(a)
    assert (o.beta1, o.beta2, o.eps, o.min_lr_ratio) == (0.8, 0.99, 1e-6, 0.2)
    assert o.exts == [".py", ".c"] and o.progress is False and o.verbose is True
    assert o.out_dir == "o" and o.max_steps == 3


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(vocab_size="4096"), TypeError, "vocab_size must be an integer"),
    (dict(embed_dim=2**31), cllm.ConfigError, "embed_dim must be in"),
    (dict(embed_dim=4294967296), cllm.ConfigError, "embed_dim"),
    (dict(beta1=1.0), cllm.ConfigError, "beta1"),
    (dict(eps=0.0), cllm.ConfigError, "eps"),
    (dict(learning_rate=True), TypeError, "learning_rate"),
    (dict(min_lr_ratio=2), cllm.ConfigError, "min_lr_ratio"),
    (dict(progress="yes"), TypeError, "progress"),
    (dict(exts=[1]), TypeError, "exts"),
    (dict(bogus=1), TypeError, "unexpected keyword argument 'bogus'"),
    (dict(epoch=1), TypeError, "did you mean 'epochs'"),
])
def test_options_validated_at_the_api_boundary(kw, exc, msg):
    with pytest.raises(exc, match=msg) as ei:
        cllm.train("/no/such/path", **kw)
    assert isinstance(ei.value, cllm.CllmError)


def test_tokenizer_errors_are_cllm_errors():
    with pytest.raises(cllm.CllmError):
        cllm.Tokenizer.byte_level().decode([10**6])
    with pytest.raises(cllm.CllmError):
        cllm.Tokenizer.train(texts=["abc abc"], vocab_size=10)
