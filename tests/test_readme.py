"""Every command and code block of README.md runs, as the examples do (tests/test_examples.py).

The README's fenced ``bash`` / ``console`` blocks are shell commands and its
``python`` blocks are programs; ``text`` blocks are program output or synopses
and are not run. :data:`COMMANDS` lists every shell command the README holds
and how the fast test caps its size; a README command missing from it (or an
entry whose command left the README) fails :func:`test_every_readme_command_is_covered`.

The fast test runs the blocks in README order in one scratch directory holding a
small source tree, the ``cllm train`` commands with a tiny model appended
(argparse keeps the last value of a repeated flag) and ``cllm.train`` in the
python blocks with the same tiny sizes. The two set-up commands run verbatim,
each in a fresh venv on a copy of this checkout, in the ``slow`` tests.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BIN = os.path.dirname(sys.executable)

#: Languages of fenced blocks: run as shell, run as python, or not run.
SHELL_LANGS = ("bash", "console")
RUN_LANGS = SHELL_LANGS + ("python",)
KNOWN_LANGS = RUN_LANGS + ("text",)

#: A model small enough that a training command takes about a second.
TINY = "--vocab-size 300 --embed-dim 32 --num-layers 1 --seq-len 32 --batch-size 4 --threads 1 -q --sample-tokens 8"
TINY_KW = dict(vocab_size=300, embed_dim=32, num_layers=1, seq_len=32, batch_size=4, threads=1, max_steps=2,
               progress=False)

SETUP_TRAIN = "python3 -m venv .venv && . .venv/bin/activate && pip install . && cllm train"
SETUP_TEST = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test,mpi]" && pytest'

#: Every shell command of the README -> (how the fast test runs it, the cap it appends).
#: ``append``: the command as written plus the cap; ``tail``: only its last ``&&`` part
#: (the venv and pip parts run in the slow tests) plus the cap, in the checkout for
#: ``pytest``; ``mpirun``: ``mpirun -n 2`` with the flags a small shared machine
#: needs (:func:`cllm.training.distributed.mpirun_command`), then the rest plus the cap.
COMMANDS: Dict[str, Tuple[str, str]] = {
    SETUP_TRAIN: ("tail", f"--out runs/default --max-bytes 300000 --max-steps 2 {TINY}"),
    SETUP_TEST: ("tail", "--collect-only -q -p no:cacheprovider"),
    "cllm corpus .": ("append", ""),
    "cllm train . --out runs/demo --max-steps 300 --checkpoint-every 100":
        ("append", f"--max-steps 4 --checkpoint-every 2 {TINY}"),
    'cllm generate runs/demo -p "def main(" -n 64 -t 0.8 -s 1': ("append", ""),
    'cllm generate runs/demo -p "class " -n 48 -t 0 --stop "def "': ("append", ""),
    'cllm generate runs/demo -p "def add(a, b):" --suffix "print(add(1, 2))" -n 32 -t 0': ("append", ""),
    "cllm eval runs/demo --split val --fim line --samples 50": ("append", "--samples 5 -q"),
    "cllm train --resume --out runs/demo": ("append", "-q --sample-tokens 8"),
    "cllm quantize runs/demo runs/demo-int8 --dtype int8": ("append", ""),
    'cllm generate runs/demo-int8 -p "import " -n 32 -t 0': ("append", ""),
    "cllm eval runs/demo-int8 . --max-bytes 200000": ("append", "-q"),
    "cllm eval runs/demo . --dtype bf16 --max-bytes 200000": ("append", "-q"),
    "cllm train . --init-from runs/demo --out runs/tuned --max-steps 100":
        ("append", f"--max-steps 2 {TINY}"),
    "cllm info runs/tuned": ("append", ""),
    "mpirun -n 2 cllm train . --threads 1 --batch-size 8 --out runs/mpi": ("mpirun", f"--max-steps 2 {TINY}"),
}

#: Patched into ``cllm.train`` before a python block runs: the block's own
#: options, with the tiny sizes on top.
PY_PRELUDE = f"""\
import cllm
_train = cllm.train
def _tiny_train(path=None, **options):
    return _train(path, **{{**options, **{TINY_KW!r}}})
cllm.train = _tiny_train
"""


def fenced_blocks(text: str) -> List[Tuple[str, int, str]]:
    """(language, line number of the opening fence, body) of every fenced block."""
    blocks, lang, start, body = [], None, 0, []
    for no, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), no, []
            else:
                blocks.append((lang, start, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md: the block opened at line {start} is never closed"
    return blocks


def _strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` after a blank, outside quotes)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(lang: str, body: str) -> List[str]:
    """The commands of a ``bash`` block (continuations joined, comments dropped)
    or of a ``console`` block (its ``$ `` lines)."""
    lines = body.splitlines()
    if lang == "console":
        lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
    cmds, cur = [], ""
    for ln in lines:
        if ln.rstrip().endswith("\\"):
            cur += ln.rstrip()[:-1].strip() + " "
            continue
        cmd = _strip_comment(cur + ln.strip())
        cur = ""
        if cmd:
            cmds.append(" ".join(cmd.split()))
    return cmds


def readme_blocks() -> List[Tuple[str, int, str]]:
    return fenced_blocks(README.read_text(encoding="utf-8"))


def fast_command(cmd: str) -> Tuple[str, bool]:
    """The command the fast test runs for README command ``cmd``, and whether it
    runs in the checkout (else in the scratch tree)."""
    how, cap = COMMANDS[cmd]
    if how == "append":
        return f"{cmd} {cap}".strip(), False
    if how == "tail":
        tail = cmd.split(" && ")[-1]
        return f"{tail} {cap}", tail == "pytest"
    assert how == "mpirun" and cmd.startswith("mpirun -n 2 "), cmd
    from cllm.training.distributed import mpirun_command
    return f"{shlex.join(mpirun_command(2))} {cmd[len('mpirun -n 2 '):]} {cap}", False


def _env() -> Dict[str, str]:
    return dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), PYTHONPATH=str(ROOT),
                CLLM_PROGRESS_INTERVAL="3600")


def _run(args, where: str, cwd: Path, timeout: float = 600, **kw) -> str:
    r = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"README {where} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture
def source_tree(code_corpus: str, tmp_path: Path) -> Path:
    """A small source tree to run the README in: six of the stdlib modules of
    ``code_corpus`` (a copy, as the README's runs write ``runs/`` into it)."""
    for name in sorted(os.listdir(code_corpus))[:6]:
        shutil.copyfile(os.path.join(code_corpus, name), tmp_path / name)
    return tmp_path


def test_blocks_are_known_languages():
    """Every fenced block says what it is, so no command hides in an untagged block."""
    for lang, line, _ in readme_blocks():
        assert lang in KNOWN_LANGS, f"README.md:{line}: fence language {lang!r} is not one of {KNOWN_LANGS}"


def test_every_readme_command_is_covered():
    found = [c for lang, _, body in readme_blocks() if lang in SHELL_LANGS for c in shell_commands(lang, body)]
    assert len(found) == len(set(found)), "a README command appears twice"
    missing = [c for c in found if c not in COMMANDS]
    stale = [c for c in COMMANDS if c not in found]
    assert not missing, f"README commands no test runs (add them to COMMANDS): {missing}"
    assert not stale, f"COMMANDS entries no longer in the README: {stale}"
    assert SETUP_TRAIN in found and SETUP_TEST in found, "the two set-up commands changed"


def test_shell_command_parsing():
    body = "cllm a \\\n   --b 1   # note\necho '# kept' # dropped\n\n# only a comment"
    assert shell_commands("bash", body) == ["cllm a --b 1", "echo '# kept'"]
    assert shell_commands("console", "$ cllm corpus .\ncorpus: ...") == ["cllm corpus ."]
    assert fenced_blocks("x\n```bash\na\n```\n```text\nb\nc\n```\n") == [("bash", 2, "a"), ("text", 5, "b\nc")]


def test_readme_runs(source_tree: Path):
    """Every bash and python block, in README order, in one scratch tree."""
    assert shutil.which("cllm", path=_env()["PATH"]), "the cllm command is not installed (pip install -e .)"
    ran = 0
    for lang, line, body in readme_blocks():
        if lang in SHELL_LANGS:
            for cmd in shell_commands(lang, body):
                fast, in_checkout = fast_command(cmd)
                out = _run(["bash", "-c", fast], f"line {line}: {fast}", ROOT if in_checkout else source_tree)
                if cmd.startswith("cllm generate"):
                    assert out.strip(), f"README line {line}: {cmd} printed nothing"
                ran += 1
        elif lang == "python":
            _run([sys.executable, "-c", PY_PRELUDE + body], f"python block at line {line}", source_tree)
            ran += 1
    assert ran >= len(COMMANDS)
    assert (source_tree / "runs" / "demo-int8" / "model.safetensors").is_file()
    assert (source_tree / "runs" / "api" / "checkpoint.json").is_file()


# ---------------------------------------------------------------- docs/

def _links(path: Path) -> List[Tuple[str, str]]:
    """(target file, anchor or "") of every Markdown link in ``path``."""
    return re.findall(r"\]\(([^)#\s]+)(?:#([^)]*))?\)", path.read_text(encoding="utf-8"))


def _anchors(path: Path) -> set:
    """GitHub's anchors of the headings of ``path``: lower case, punctuation dropped,
    spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def test_docs_are_linked_and_links_resolve():
    docs = sorted(DOCS.glob("*.md"))
    assert docs, "docs/ is empty"
    linked = {os.path.normpath(ROOT / t) for t, _ in _links(README)}
    for d in docs:
        assert str(d) in linked, f"README.md does not link {d.relative_to(ROOT)}"
    for f in [README, *docs]:
        for target, anchor in _links(f):
            assert not target.startswith("http"), f"{f.name} links outside the repository: {target}"
            assert (f.parent / target).exists(), f"{f.relative_to(ROOT)}: broken link {target}"
            if anchor:
                assert anchor in _anchors(f.parent / target), f"{f.relative_to(ROOT)}: no heading #{anchor} in {target}"


def test_docs_are_self_contained():
    """Each document says first what it covers, and nothing refers to files or
    trackers outside the repository."""
    banned = re.compile(r"(?-i:DESIGN\.md)|\bissue\s*#?\d+|the issue.s", re.IGNORECASE)
    for f in [README, *sorted(DOCS.glob("*.md"))]:
        text = f.read_text(encoding="utf-8")
        hit = banned.search(text)
        assert hit is None, f"{f.relative_to(ROOT)} refers outside the repository: {hit.group(0)!r}"
        if f.parent == DOCS:
            first = [p for p in text.split("\n\n") if p.strip()][:2]
            assert first[0].startswith("# ") and not first[1].startswith(("#", "```", "|", "-")), \
                f"{f.name} must open with a title and a sentence saying what it covers"


# ---------------------------------------------------------------- slow: verbatim

def _checkout_copy(dest: Path) -> Path:
    """The checkout's tracked and untracked-but-not-ignored files, copied to ``dest``."""
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode == 0:
        for rel in filter(None, r.stdout.split("\0")):
            if (ROOT / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel)
    else:   # not a git checkout: everything but build products and caches
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "runs", "*.egg-info", "__pycache__", "*.so"))
    return dest


def _clean_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != BIN)
    env["CLLM_PROGRESS_INTERVAL"] = "3600"
    return env


@pytest.mark.slow
def test_setup_train_verbatim(tmp_path: Path):
    """The first set-up command exactly as written, in a copy of the checkout:
    a fresh venv, ``pip install .`` and the default ``cllm train`` (minutes)."""
    work = _checkout_copy(tmp_path / "cllm")
    r = subprocess.run(["bash", "-c", SETUP_TRAIN], cwd=work, env=_clean_env(), capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "trained" in r.stdout and "val loss" in r.stdout and "sample:" in r.stdout, r.stdout
    assert (work / "runs" / "cllm" / "checkpoint.json").is_file()


@pytest.mark.slow
def test_setup_test_verbatim(tmp_path: Path):
    """The second set-up command as written, in a copy of the checkout: a fresh
    venv and ``pip install -e ".[test,mpi]"``, then ``pytest`` on one module (the
    whole suite is the run this test belongs to)."""
    work = _checkout_copy(tmp_path / "cllm")
    cmd = SETUP_TEST + " -q -p no:cacheprovider tests/test_structure.py tests/test_api.py"
    r = subprocess.run(["bash", "-c", cmd], cwd=work, env=_clean_env(), capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert re.search(r"\d+ passed", r.stdout) and "failed" not in r.stdout, r.stdout[-3000:]
