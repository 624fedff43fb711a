"""The package's shape: no import cycles in cllm/, every module importable on
its own, one options table behind the API, the CLI and the trainer state."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import subprocess
import sys

import pytest

import cllm
from cllm.options import TrainOptions

PKG = os.path.dirname(cllm.__file__)
MODULES = sorted(f[:-3] for f in os.listdir(PKG) if f.endswith(".py") and f not in ("__init__.py", "__main__.py"))


def _imports(mod: str) -> set:
    """cllm modules imported anywhere in ``mod`` (top level or inside functions)."""
    tree = ast.parse(open(os.path.join(PKG, mod + ".py"), encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cllm."):
            out.add(node.module.split(".")[1])
    return {m for m in out if m in MODULES}


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


@pytest.mark.parametrize("mod", [m for m in MODULES if m not in ("_build",)])
def test_each_module_imports_alone(mod):
    r = subprocess.run([sys.executable, "-c", f"import cllm.{mod}"], capture_output=True, text=True,
                       cwd=os.path.dirname(PKG))
    assert r.returncode == 0, r.stderr


def test_every_module_says_what_it_owns():
    for m in MODULES + ["__init__", "__main__"]:
        doc = ast.get_docstring(ast.parse(open(os.path.join(PKG, m + ".py"), encoding="utf-8").read()))
        assert doc and len(doc) > 20, m


def test_every_option_reaches_api_cli_and_state():
    sig = inspect.signature(cllm.train)
    from cllm.cli import build_parser
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
    from cllm.cli import build_parser
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


def test_importing_the_train_module_keeps_cllm_train_the_function():
    r = subprocess.run([sys.executable, "-c", "import cllm.train, cllm, inspect; "
                        "from cllm.train import Batches; assert callable(cllm.train) and "
                        "'out_dir' in inspect.signature(cllm.train).parameters, cllm.train"],
                       capture_output=True, text=True, cwd=os.path.dirname(PKG))
    assert r.returncode == 0, r.stderr
