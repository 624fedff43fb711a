"""Corpus selection: git's file list (or .gitignore via pathspec) minus the documented skips."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cllm.data import corpus as C
from cllm.data.corpus import CorpusError, Document, scan, split_documents

HAVE_GIT = shutil.which("git") is not None
needs_git = pytest.mark.skipif(not HAVE_GIT, reason="git not installed")


def _w(root, rel, data):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


SRC = "def f(x):\n    return x + 1\n"

#: every file of the test tree -> the reason it is skipped (None: in the corpus)
TREE = {
    ".gitignore": ("*.log\nignored_dir/\n/top_only.txt\n", None),
    ".gitattributes": ("vendor/** linguist-vendored\nvendor/keep/** -linguist-vendored\n"
                       "*.pb.py linguist-generated\ndocs/api/** linguist-generated=true\n"
                       "dirpattern/ linguist-vendored\n", None),
    "main.py": ("import pkg\n\nprint(pkg.f(1))\n", None),
    "main_copy.py": ("import pkg\n\nprint(pkg.f(1))\n", "duplicate"),
    "pkg/__init__.py": (SRC, None),
    "pkg/.gitignore": ("*.tmp\n!keep.tmp\n", None),
    "pkg/scratch.tmp": ("scratch\n", "ignored"),
    "pkg/keep.tmp": ("kept by negation\n", None),
    "pkg/sub/top_only.txt": ("anchored pattern does not match here\n", None),
    "top_only.txt": ("ignored at the top\n", "ignored"),
    "debug.log": ("log\n", "ignored"),
    "ignored_dir/a.py": (SRC + "# a\n", "ignored"),
    "private.txt": ("in .git/info/exclude\n", "ignored"),
    "vendor/lib.py": (SRC + "# vendored\n", "vendored"),
    "vendor/keep/mine.py": (SRC + "# not vendored after all\n", None),
    "dirpattern/x.py": (SRC + "# dir patterns do not apply to files in gitattributes\n", None),
    "proto/msg.pb.py": (SRC + "# generated\n", "generated"),
    "docs/api/index.md": ("# API\n", "generated"),
    "docs/guide.md": ("# Guide\n\nText.\n", None),
    "runs/cllm/tokenizer.json": ('{"model": {}}\n', "cllm-output"),
    "runs/cllm/notes.txt": ("anything under the top-level runs/\n", "cllm-output"),
    "experiments/r1/trainer_state.json": ('{"step": 3}\n', "cllm-output"),
    "experiments/r1/tokenizer.json": ('{"vocab": 1}\n', "cllm-output"),
    "experiments/r1/cache/tokens.txt": ("under a run dir\n", "cllm-output"),
    "experiments/notes.md": ("# experiments\n", None),
    "web/app.min.js": ("function a(){return 1}\n", "minified"),
    "web/bundle.js": ("var x=" + "1+" * 3000 + "1;\n", "minified"),
    "web/app.js": ("function a() {\n  return 1;\n}\n", None),
    "package-lock.json": ('{"lockfileVersion": 3}\n', "lock-file"),
    "poetry.lock": ("[[package]]\n", "lock-file"),
    "sub/Cargo.lock": ("version = 3\n", "lock-file"),
    "logo.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "empty.py": ("", "empty"),
    "big.txt": ("x = 1\n" * 4000, "too-large"),
    "untracked_new.py": (SRC + "# untracked, not ignored\n", None),
}
MAX_FILE = 20_000


@pytest.fixture
def repo(tmp_path):
    root = str(tmp_path / "repo")
    os.makedirs(root)
    for rel, (data, _) in TREE.items():
        _w(root, rel, data)
    if HAVE_GIT:
        _git(root, "init", "-q")
        _w(root, ".git/info/exclude", "private.txt\n")
        tracked = [r for r in TREE if TREE[r][1] not in ("ignored",) and r != "untracked_new.py"
                   and not r.startswith(("runs/", "experiments/r1"))]
        _git(root, "add", *tracked)
        _w(root, "forced.log", "tracked although *.log is ignored\n")
        _w(root, "gone.py", SRC + "# deleted from the work tree\n")
        _git(root, "add", "-f", "forced.log", "gone.py")
        _git(root, "commit", "-q", "-m", "init")
        os.unlink(os.path.join(root, "gone.py"))
    return root


def _git_ls(root):
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, stdout=subprocess.PIPE).stdout
    return {p.decode() for p in out.split(b"\0") if p}


@needs_git
def test_git_corpus_is_ls_files_minus_documented_skips(repo):
    c = scan(repo, max_file_bytes=MAX_FILE)
    assert c.source.startswith("git ls-files")
    used = {d.relpath for d in c.documents}
    skipped = {s.relpath: s.reason for s in c.skipped if s.reason != "ignored"}
    listed = _git_ls(repo)
    # every listed file is either used or skipped for a documented reason, never both
    assert used | set(skipped) == listed
    assert not used & set(skipped)
    assert set(skipped.values()) <= set(C.SKIP_REASONS)
    expect_used = {r for r, (_, why) in TREE.items() if why is None} | {"forced.log"}
    assert used == expect_used
    for rel, (_, why) in TREE.items():
        if why not in (None, "ignored"):
            assert skipped[rel] == why, rel
    assert skipped["gone.py"] == "not-a-file"
    # git's ignore rules: not listed at all, reported as ignored paths
    ign = {s.relpath for s in c.skipped if s.reason == "ignored"}
    for rel in ("pkg/scratch.tmp", "top_only.txt", "debug.log", "private.txt"):
        assert rel not in listed and rel in ign
    assert "ignored_dir" in ign
    # documents are read exactly, in walk order (a directory's files before its sub-directories)
    for d in c.documents:
        assert d.data == open(os.path.join(repo, d.relpath), "rb").read()
    order = [d.relpath for d in c.documents]
    assert order.index("main.py") < order.index("pkg/__init__.py") < order.index("pkg/sub/top_only.txt")


@needs_git
def test_walk_matches_git_on_the_same_tree(repo):
    g = scan(repo, max_file_bytes=MAX_FILE)
    w = scan(repo, max_file_bytes=MAX_FILE, use_git=False)
    assert w.source.startswith("directory walk")
    gu = [d.relpath for d in g.documents]
    # forced.log is tracked in spite of *.log: only git knows; hidden dirs (.git) are skipped by the walk
    assert [d.relpath for d in w.documents] == [r for r in gu if r != "forced.log"]
    assert C._walk_attributes(repo, sorted(_git_ls(repo))) == C._git_attributes(repo, sorted(_git_ls(repo)))


def test_non_git_tree_honours_gitignore_with_pathspec(repo, tmp_path):
    plain = str(tmp_path / "plain")
    shutil.copytree(repo, plain, ignore=shutil.ignore_patterns(".git"))
    _w(plain, "node_modules/x/index.js", "module.exports = 1;\n")
    _w(plain, "src/__pycache__/m.cpython-311.pyc", b"\x00\x01")
    _w(plain, "src/deep/.gitignore", "!*.log\nlocal.py\n")
    _w(plain, "src/deep/back.log", "re-included by a deeper negation\n")
    _w(plain, "src/deep/local.py", "ignored by the deeper file\n")
    c = scan(plain, max_file_bytes=MAX_FILE)
    assert c.source.startswith("directory walk")
    used = {d.relpath for d in c.documents}
    expect = ({r for r, (_, why) in TREE.items() if why is None}
              | {"private.txt", "src/deep/.gitignore", "src/deep/back.log"})  # no .git/info/exclude here
    assert used == expect
    ign = {s.relpath for s in c.skipped if s.reason == "ignored"}
    assert {"node_modules", "src/__pycache__", "src/deep/local.py", "ignored_dir", "debug.log"} <= ign
    reasons = {s.relpath: s.reason for s in c.skipped}
    for rel, (_, why) in TREE.items():
        if why not in (None, "ignored"):
            assert reasons[rel] == why, rel


def test_filters_and_caps(repo):
    c = scan(repo, ["py"], max_file_bytes=MAX_FILE, use_git=False)
    assert {os.path.splitext(d.relpath)[1] for d in c.documents} == {".py"}
    c = scan(repo, include=["pkg/", "*.md"], exclude=["docs/"], max_file_bytes=MAX_FILE, use_git=False)
    assert {d.relpath for d in c.documents} == {"pkg/__init__.py", "pkg/.gitignore", "pkg/keep.tmp", "pkg/sub/top_only.txt",
                                                "experiments/notes.md"}
    assert {s.relpath for s in c.skipped if s.reason == "not-selected"} >= {"docs/guide.md", "main.py"}
    c = scan(repo, max_bytes=10, use_git=False)
    assert len(c.documents) == 1
    assert any(s.reason == "over-max-bytes" for s in c.skipped)
    c = scan(repo, use_git=False)  # the default 2 MiB cap keeps big.txt
    assert "big.txt" in {d.relpath for d in c.documents}
    by = c.skipped_by_reason()
    assert by["duplicate"] == (1, len(TREE["main_copy.py"][0]))
    assert list(by) == [r for r in C.SKIP_REASONS if r in by]


def test_too_large_is_logged_by_name(repo, caplog):
    with caplog.at_level("WARNING", logger="cllm.data.corpus"):
        scan(repo, max_file_bytes=MAX_FILE, use_git=False)
    assert any("big.txt" in r.getMessage() and "per-file cap" in r.getMessage() for r in caplog.records)


def test_run_output_dir_and_errors(repo, tmp_path):
    _w(repo, "myout/model.safetensors", "not really\n")
    c = scan(repo, skip_dirs=[os.path.join(repo, "myout")], use_git=False)
    assert {s.reason for s in c.skipped if s.relpath.startswith("myout/")} == {"cllm-output"}
    with pytest.raises(CorpusError, match="is the corpus itself"):
        scan(repo, skip_dirs=[repo])
    with pytest.raises(CorpusError, match="checkpoint or run directory"):
        scan(os.path.join(repo, "experiments", "r1"))
    with pytest.raises(CorpusError, match="does not exist"):
        scan(str(tmp_path / "nope"))
    with pytest.raises(CorpusError, match="no usable text files"):
        C.load_documents(os.path.join(repo, "web"), exts=[".rs"])


def test_single_file_and_ignored_subtree(repo):
    c = scan(os.path.join(repo, "main.py"))
    assert [d.relpath for d in c.documents] == ["main.py"]
    if HAVE_GIT:  # a directory git ignores is read as a plain tree (its own rules only)
        c = scan(os.path.join(repo, "ignored_dir"))
        assert [d.relpath for d in c.documents] == ["a.py"]


@pytest.mark.parametrize("name,data,minified", [
    ("a.min.js", b"x", True), ("a-min.css", b"x", True), ("a.js", b"a;\n" * 10, False),
    ("a.py", b"x" * (C.MAX_LINE_BYTES + 1) + b"\n" + b"y\n" * 100, True),
    ("a.py", b"x" * 450 + b"\n" + b"y\n", True), ("a.py", b"x" * 450 + b"\n" + b"y\n" * 4, False),
])
def test_is_minified(name, data, minified):
    assert C.is_minified(name, data) is minified


def test_attr_patterns():
    rx = C._attr_regex
    assert rx("*.c").match("a/b/x.c") and not rx("*.c").match("a/x.cc")
    assert rx("/x.py").match("x.py") and not rx("/x.py").match("a/x.py")
    assert rx("a/*.py").match("a/x.py") and not rx("a/*.py").match("a/b/x.py")
    assert rx("**/gen/*.py").match("gen/x.py") and rx("**/gen/*.py").match("a/b/gen/x.py")
    assert rx("a/**").match("a/b/c") and rx("a/**/z").match("a/z") and rx("a/**/z").match("a/b/c/z")
    assert rx("d/") is None
    assert rx("x[0-9].py").match("x1.py") and rx("x[!0-9].py").match("xa.py")


def _docs(sizes):
    return [Document(f"/r/f{i}.py", b"x" * s, f"dir{i % 3}/f{i}.py") for i, s in enumerate(sizes)]


def test_split_is_stable_whole_documents_and_about_the_fraction():
    docs = _docs([1000 + 37 * i for i in range(200)])
    tr, va = split_documents(docs, 0.05)
    total = sum(len(d.data) for d in docs)
    frac = sum(len(d.data) for d in va) / total
    assert 0.05 <= frac <= 0.05 + 2 * max(len(d.data) for d in docs) / total
    assert set(d.relpath for d in tr).isdisjoint(d.relpath for d in va)
    assert len(tr) + len(va) == len(docs)
    # corpus order kept inside each part
    assert [d.relpath for d in tr] == [d.relpath for d in docs if d in tr]
    # stable: the same paths are held out whatever the order and the absolute root
    moved = [Document("/elsewhere/" + d.relpath, d.data, d.relpath) for d in reversed(docs)]
    assert {d.relpath for d in split_documents(moved, 0.05)[1]} == {d.relpath for d in va}
    # not the tail of the list
    assert {d.relpath for d in va} != {d.relpath for d in docs[-len(va):]}
    # a larger fraction holds out more
    assert sum(len(d.data) for d in split_documents(docs, 0.2)[1]) > 3 * sum(len(d.data) for d in va)


def test_split_edge_cases():
    one = _docs([500])
    assert split_documents(one, 0.1) == (one, [])
    docs = _docs([100, 5000, 7000])
    assert split_documents(docs, 0.0) == (docs, [])
    tr, va = split_documents(docs, 0.001)  # every document exceeds the target: the smallest is held out
    assert [d.relpath for d in va] == [docs[0].relpath]


def test_cli_corpus(repo):
    r = subprocess.run([sys.executable, "-m", "cllm", "corpus", repo, "--max-file-bytes", str(MAX_FILE),
                        "--list"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "used: " in out and ".py" in out
    for reason in ("cllm-output", "vendored", "generated", "lock-file", "minified", "duplicate", "binary"):
        assert reason in out
    assert "+ main.py" in out and "- main_copy.py  [duplicate]" in out
    r = subprocess.run([sys.executable, "-m", "cllm", "corpus", repo + "/nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
