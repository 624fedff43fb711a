"""Corpus discovery: which files of a source tree a model is trained on.

File-system walking and corpus-file reading live here (never in C, and
nowhere else: the tokenizer reads paths through :func:`iter_documents`, the
token cache through :func:`read_document`). The rules, in order:

1. **Listing.** Inside a git work tree (and with ``git`` on PATH) the corpus
   starts from exactly the files git would take: ``git ls-files --cached
   --others --exclude-standard`` (tracked plus untracked-but-not-ignored;
   every ``.gitignore``, ``.git/info/exclude`` and ``core.excludesFile``).
   Otherwise the tree is walked and every ``.gitignore`` on the way (and the
   repository's ``.git/info/exclude``, if any) is honoured with ``pathspec``;
   outside git, version-control, cache and hidden directories
   (:data:`WALK_SKIP_DIRS`) are skipped too.
2. **Documented skips** (each counted by reason in :class:`Corpus`):
   cllm's own output (any directory holding a checkpoint, the ``runs/``
   directory at the top of the corpus, the run's own output directory),
   vendored code (files under :data:`VENDOR_DIRS` unless kept, and
   ``linguist-vendored`` paths from ``.gitattributes``), ``linguist-generated`` paths, lock files (:data:`LOCK_FILES`), paths not selected
   by ``-e``/``--include``/``--exclude``, symbolic links to files outside the
   corpus root (never read, so nothing outside the tree reaches a model), empty files, files above the
   per-file size cap, binary files, minified files (``*.min.js`` and any
   file with very long lines) and exact duplicates (same content hash; the
   first path in corpus order is kept).
3. **Order.** Files are taken in the order of a sorted top-down walk (a
   directory's files, then its sub-directories, all sorted), so the same
   tree always gives the same corpus; ``max_bytes`` stops after the cap.
"""
from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sysconfig
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import CorpusError

log = logging.getLogger(__name__)

#: Per-file size cap (bytes); larger files are skipped with a warning.
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Default cap for the default corpus (the running interpreter's stdlib).
DEFAULT_CORPUS_BYTES = 4 * 1024 * 1024
#: A file whose longest line exceeds this many bytes is treated as minified / data.
MAX_LINE_BYTES = 4000
#: ... as is a file whose lines average more than this many bytes.
MAX_MEAN_LINE_BYTES = 200
#: Directories skipped when walking without git (their contents are tool output).
WALK_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv",
                            ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".eggs",
                            "build", "dist", "site-packages"})
#: Directories of vendored (copied-in third-party) code, skipped unless asked for: a model
#: trained on a project should learn the project, not the tables of its dependencies.
VENDOR_DIRS = frozenset({"_vendor", "vendor", "vendored", "third_party", "third-party", "thirdparty",
                         "3rdparty", "node_modules", "bower_components", "site-packages", "Pods"})
#: Dependency lock files (generated, long and repetitive), matched by file name.
LOCK_FILES = frozenset({"package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml",
                        "bun.lockb", "poetry.lock", "Pipfile.lock", "pdm.lock", "uv.lock",
                        "Cargo.lock", "Gemfile.lock", "composer.lock", "go.sum", "flake.lock",
                        "mix.lock", "pubspec.lock", "Podfile.lock", "packages.lock.json",
                        "gradle.lockfile", "conda-lock.yml", "Package.resolved"})
_MINIFIED_NAME = re.compile(r"[.-]min\.(js|mjs|cjs|css)$")
#: Files whose presence marks a directory as cllm output (a checkpoint or a run).
OUTPUT_MARKERS = ("trainer_state.json", "metrics.jsonl")
#: The default output root (``cllm train --out runs/...``), skipped at the top of a corpus.
DEFAULT_RUNS_DIR = "runs"

#: Skip reasons, in the order checks run (the report lists them in this order).
SKIP_REASONS = OrderedDict([
    ("ignored", "ignored by .gitignore (or a tool/cache dir outside git); paths, not files"),
    ("cllm-output", "cllm's own output (a checkpoint or run directory, top-level runs/)"),
    ("vendored", "vendored code: under a vendor directory (_vendor/, vendor/, third_party/, node_modules/ ...) "
                 "or linguist-vendored in .gitattributes"),
    ("generated", "linguist-generated in .gitattributes"),
    ("lock-file", "dependency lock file"),
    ("not-selected", "not selected by -e / --include / --exclude"),
    ("outside-root", "a symbolic link to a file outside the corpus root (never read)"),
    ("not-a-file", "not a regular file (submodule, broken link, deleted)"),
    ("empty", "empty file"),
    ("too-large", "above the per-file size cap"),
    ("binary", "binary (NUL bytes or not UTF-8)"),
    ("minified", "minified or very long lines"),
    ("duplicate", "same content as an earlier file"),
    ("over-max-bytes", "after the --max-bytes cap was reached"),
])


@dataclass(frozen=True)
class Document:
    """One text file of the corpus (``relpath``: '/'-separated, relative to the corpus root)."""
    path: str
    data: bytes
    relpath: str = ""


@dataclass(frozen=True)
class Skipped:
    """A path left out of the corpus, why, and its size in bytes (-1: not measured)."""
    relpath: str
    reason: str
    size: int = -1


@dataclass
class Corpus:
    """What :func:`scan` found: the documents and every skip with its reason."""
    root: str
    source: str
    documents: List[Document] = field(default_factory=list)
    skipped: List[Skipped] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Bytes of all documents."""
        return sum(len(d.data) for d in self.documents)

    def by_extension(self) -> Dict[str, Tuple[int, int]]:
        """``{ext: (files, bytes)}`` of the documents, largest first."""
        out: Dict[str, List[int]] = {}
        for d in self.documents:
            ext = os.path.splitext(d.relpath)[1] or "(none)"
            e = out.setdefault(ext, [0, 0])
            e[0] += 1
            e[1] += len(d.data)
        return {k: (v[0], v[1]) for k, v in sorted(out.items(), key=lambda kv: (-kv[1][1], kv[0]))}

    def skipped_by_reason(self) -> Dict[str, Tuple[int, int]]:
        """``{reason: (count, bytes)}`` in :data:`SKIP_REASONS` order (bytes of measured paths)."""
        out: Dict[str, List[int]] = {}
        for s in self.skipped:
            e = out.setdefault(s.reason, [0, 0])
            e[0] += 1
            e[1] += max(s.size, 0)
        return {r: (out[r][0], out[r][1]) for r in SKIP_REASONS if r in out}

    def report(self, list_files: bool = False) -> str:
        """Human-readable summary (what ``cllm corpus`` prints)."""
        lines = [f"corpus: {self.root}", f"listing: {self.source}",
                 f"used: {len(self.documents):,} files, {self.total_bytes:,} bytes"]
        if self.documents:
            lines.append(f"  {'extension':<14}{'files':>9}{'bytes':>15}")
            for ext, (n, b) in self.by_extension().items():
                lines.append(f"  {ext:<14}{n:>9,}{b:>15,}")
        sk = self.skipped_by_reason()
        lines.append(f"skipped: {len(self.skipped):,} paths" + (":" if sk else ""))
        for reason, (n, b) in sk.items():
            size = f"{b:>15,}" if reason != "ignored" else f"{'-':>15}"
            lines.append(f"  {reason:<14}{n:>9,}{size}  {SKIP_REASONS[reason]}")
        if list_files:
            lines.append("files:")
            lines += [f"  + {d.relpath}" for d in self.documents]
            lines += [f"  - {s.relpath}  [{s.reason}]" for s in self.skipped]
        return "\n".join(lines)


def default_corpus_path() -> str:
    """The Python standard library source of the running interpreter."""
    return sysconfig.get_paths()["stdlib"]


def _norm_exts(exts: Optional[Iterable[str]]) -> Optional[set]:
    if not exts:
        return None
    out = set()
    for e in exts:
        for part in str(e).split(","):
            part = part.strip()
            if part:
                out.add(part if part.startswith(".") else "." + part)
    return out or None


def is_text(data: bytes) -> bool:
    """Heuristic: no NUL byte in the first 8 KiB and valid UTF-8 (or mostly)."""
    head = data[:8192]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the 8 KiB boundary is fine
        return e.start >= len(head) - 4


def is_minified(name: str, data: bytes) -> bool:
    """``*.min.js``-style names, or lines that are very long (longest above
    :data:`MAX_LINE_BYTES` or mean above :data:`MAX_MEAN_LINE_BYTES`)."""
    if _MINIFIED_NAME.search(name):
        return True
    nlines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if len(data) / max(1, nlines) > MAX_MEAN_LINE_BYTES:
        return True
    if len(data) <= MAX_LINE_BYTES:
        return False
    return max(map(len, data.split(b"\n"))) > MAX_LINE_BYTES


def _walk_key(relpath: str) -> Tuple[Tuple[int, str], ...]:
    """Sort key giving a top-down walk order: a directory's files, then its sub-directories."""
    parts = relpath.split("/")
    return tuple((1, p) for p in parts[:-1]) + ((0, parts[-1]),)


# --------------------------------------------------------------------------- listing
def _git(args: Sequence[str], cwd: str, stdin: Optional[bytes] = None) -> Optional[bytes]:
    """stdout of ``git args`` in ``cwd``, or None if git is missing or fails."""
    exe = shutil.which("git")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, *args], cwd=cwd, input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, check=False,
                           env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"))
    except OSError as e:
        log.debug("git %s failed: %s", " ".join(args), e)
        return None
    if r.returncode != 0:
        log.debug("git %s: exit %d: %s", " ".join(args), r.returncode, r.stderr.decode(errors="replace").strip())
        return None
    return r.stdout


def _split_z(out: bytes) -> List[str]:
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def _git_listing(root: str) -> Optional[Tuple[List[str], List[str]]]:
    """(files, ignored paths) under ``root`` as git sees them, or None outside a usable work tree."""
    inside = _git(["rev-parse", "--is-inside-work-tree"], root)
    if inside is None or inside.strip() != b"true":
        return None
    if _git(["check-ignore", "-q", "."], root) is not None:
        log.info("%s is ignored by its git repository: reading it as a plain directory "
                    "(its own .gitignore files still apply)", root)
        return None
    files = _git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], root)
    ignored = _git(["ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"], root)
    if files is None:
        return None
    # a path can be listed twice (tracked, and a merge conflict's stages); keep one
    return sorted(set(_split_z(files))), [p.rstrip("/") for p in _split_z(ignored or b"")]


class _IgnoreStack:
    """``.gitignore`` rules of the directories from the repository top down to a
    directory being walked; the deepest rule that matches decides (as in git)."""

    def __init__(self) -> None:
        import pathspec
        self._pathspec = pathspec
        self._specs: Dict[str, object] = {}

    def add_file(self, base: str, path: str) -> None:
        """Read the ignore file ``path`` whose patterns are relative to directory ``base``."""
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        spec = self._pathspec.GitIgnoreSpec.from_lines(lines)
        prev = self._specs.get(base)
        self._specs[base] = spec if prev is None else prev + spec  # type: ignore[operator]

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether the absolute ``path`` is ignored."""
        verdict = False
        for base, spec in self._specs.items():  # insertion order: top-down
            if path == base or not path.startswith(base.rstrip(os.sep) + os.sep):
                continue
            rel = os.path.relpath(path, base).replace(os.sep, "/") + ("/" if is_dir else "")
            r = spec.check_file(rel)  # type: ignore[attr-defined]
            if r.include is not None:
                verdict = bool(r.include)
        return verdict


def _repo_top(root: str) -> Optional[str]:
    """The nearest ancestor of ``root`` (or ``root``) holding a ``.git`` entry."""
    d = root
    while True:
        if os.path.exists(os.path.join(d, ".git")):
            return d
        up = os.path.dirname(d)
        if up == d:
            return None
        d = up


def _walk_listing(root: str) -> Tuple[List[str], List[str]]:
    """(files, ignored paths) under ``root`` honouring ``.gitignore`` files with pathspec."""
    ign = _IgnoreStack()
    top = _repo_top(root)
    if top is not None:
        ign.add_file(top, os.path.join(top, ".git", "info", "exclude"))
        d, chain = root, []
        while d != top:
            d = os.path.dirname(d)
            chain.append(d)
        for d in reversed(chain):  # ancestors' .gitignore, top-down
            ign.add_file(d, os.path.join(d, ".gitignore"))
        if ign.ignored(root, True):  # the tree itself is ignored: only its own rules count
            ign = _IgnoreStack()
    files: List[str] = []
    ignored: List[str] = []
    for d, dirs, names in os.walk(root):
        ign.add_file(d, os.path.join(d, ".gitignore"))
        rel_d = os.path.relpath(d, root)
        rel = (lambda n: n) if rel_d == "." else (lambda n: f"{rel_d.replace(os.sep, '/')}/{n}")
        keep = []
        for n in sorted(dirs):
            full = os.path.join(d, n)
            if n in WALK_SKIP_DIRS or n.startswith(".") or n.endswith(".egg-info") or ign.ignored(full, True):
                ignored.append(rel(n))
            else:
                keep.append(n)
        dirs[:] = keep
        for n in sorted(names):
            if ign.ignored(os.path.join(d, n), False):
                ignored.append(rel(n))
            else:
                files.append(rel(n))
    return files, ignored


# --------------------------------------------------------------------------- attributes
def _attr_regex(pattern: str) -> Optional[re.Pattern]:
    """Regex for a ``.gitattributes`` path pattern (None: it can never match a file).

    As in git: no '/' means the file name at any depth; otherwise the path relative
    to the attributes file's directory, where ``**`` spans directories. A pattern
    naming a directory does not apply to the files inside it.
    """
    if pattern.endswith("/"):
        return None
    if "/" not in pattern:
        return re.compile(r"(?:.*/)?" + fnmatch.translate(pattern).replace(".*", "[^/]*"))
    p = pattern.lstrip("/")
    out, i = [], 0
    while i < len(p):
        if p.startswith("**/", i):
            out.append(r"(?:.*/)?")
            i += 3
        elif p.startswith("/**", i) and i + 3 == len(p):
            out.append(r"/.*")
            i += 3
        elif p[i] == "*":
            out.append(r"[^/]*")
            i += 1
        elif p[i] == "?":
            out.append(r"[^/]")
            i += 1
        elif p[i] == "[":
            j = p.find("]", i + 2)
            if j < 0:
                out.append(re.escape(p[i]))
                i += 1
            else:
                body = p[i + 1:j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(p[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


_LINGUIST = ("linguist-vendored", "linguist-generated")
#: paths whose .gitattributes explicitly say ``-linguist-vendored``: taken even under a vendor directory
NOT_VENDORED = "-linguist-vendored"


def _attr_state(tok: str) -> Optional[Tuple[str, Optional[bool]]]:
    """(attribute, True/False/None=unspecified) of one attributes token, if linguist."""
    if tok.startswith(("-", "!")):
        name = tok[1:]
        return (name, False if tok[0] == "-" else None) if name in _LINGUIST else None
    name, eq, val = tok.partition("=")
    if name not in _LINGUIST:
        return None
    return name, (val.lower() not in ("false", "0")) if eq else True


def _walk_attributes(root: str, files: Sequence[str]) -> Dict[str, set]:
    """``{attribute: set of relpaths}`` from the ``.gitattributes`` files under ``root``
    (later lines and deeper files win, as in git)."""
    rules: List[Tuple[str, re.Pattern, str, Optional[bool]]] = []
    dirs = sorted({os.path.dirname(f) for f in files} | {""}, key=lambda d: (d.count("/"), d))
    for d in dirs:
        ga = os.path.join(root, d, ".gitattributes")
        if not os.path.isfile(ga):
            continue
        with open(ga, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                toks = line.split()
                if not toks or toks[0].startswith("#"):
                    continue
                rx = _attr_regex(toks[0])
                for t in toks[1:]:
                    st = _attr_state(t)
                    if rx is not None and st is not None:
                        rules.append((d, rx, st[0], st[1]))
    out: Dict[str, set] = {a: set() for a in _LINGUIST + (NOT_VENDORED,)}
    if not rules:
        return out
    for f in files:
        state: Dict[str, Optional[bool]] = {}
        for d, rx, name, val in rules:  # shallow files first; later rules override
            if d and not f.startswith(d + "/"):
                continue
            if rx.match(f[len(d) + 1:] if d else f):
                state[name] = val
        for a in _LINGUIST:
            if state.get(a):
                out[a].add(f)
        if state.get("linguist-vendored") is False:
            out[NOT_VENDORED].add(f)
    return out


def _git_attributes(root: str, files: Sequence[str]) -> Optional[Dict[str, set]]:
    """``{attribute: set of relpaths}`` as ``git check-attr`` reports them (None if git fails)."""
    out: Dict[str, set] = {a: set() for a in _LINGUIST + (NOT_VENDORED,)}
    if not files:
        return out
    res = _git(["check-attr", "-z", "--stdin", *_LINGUIST], root,
               stdin=b"".join(os.fsencode(f) + b"\0" for f in files))
    if res is None:
        return None
    parts = res.split(b"\0")
    for i in range(0, len(parts) - 2, 3):
        val, attr = parts[i + 2].decode(), parts[i + 1].decode()
        if val not in ("unspecified", "unset", "false", "0"):
            out[attr].add(os.fsdecode(parts[i]))
        elif attr == "linguist-vendored" and val != "unspecified":
            out[NOT_VENDORED].add(os.fsdecode(parts[i]))
    return out


# --------------------------------------------------------------------------- scan
def _output_dirs(root: str, files: Sequence[str], extra: Sequence[str]) -> List[str]:
    """Relative directories (prefixes) holding cllm output: checkpoints/runs, top-level
    ``runs/`` and the given ``extra`` directories."""
    found = {DEFAULT_RUNS_DIR}
    for e in extra:
        rel = os.path.relpath(os.path.abspath(e), root)
        if rel == ".":
            raise CorpusError(f"the output directory {e!r} is the corpus itself; choose another --out")
        if not rel.startswith(".."):
            found.add(rel.replace(os.sep, "/"))
    for d in {os.path.dirname(f) for f in files}:
        if d and any(os.path.isfile(os.path.join(root, d, m)) for m in OUTPUT_MARKERS):
            found.add(d)
        elif not d and any(os.path.isfile(os.path.join(root, m)) for m in OUTPUT_MARKERS):
            raise CorpusError(f"{root} is a cllm checkpoint or run directory, not a source tree")
    return sorted(found)


def _under(relpath: str, prefixes: Sequence[str]) -> bool:
    return any(relpath == p or relpath.startswith(p + "/") for p in prefixes)


def _matcher(globs: Optional[Sequence[str]]):
    if not globs:
        return None
    import pathspec
    return pathspec.GitIgnoreSpec.from_lines(list(globs))


def scan(path: str, exts: Optional[Sequence[str]] = None, *, include: Optional[Sequence[str]] = None,
         exclude: Optional[Sequence[str]] = None, max_bytes: Optional[int] = None,
         max_file_bytes: int = MAX_FILE_BYTES, skip_dirs: Sequence[str] = (),
         use_git: Optional[bool] = None, keep_vendored: bool = False) -> Corpus:
    """List, filter and read the corpus under ``path`` (a directory or one file).

    ``exts``: extensions to keep (``.py`` or ``py``, comma lists allowed);
    ``include``/``exclude``: gitignore-style globs on the path relative to
    ``path`` (``*.py`` matches at any depth, ``tests/`` a directory);
    ``skip_dirs``: more output directories to leave out (e.g. the run's own);
    ``use_git``: None = use git when available, False = always walk;
    ``keep_vendored``: also take files under :data:`VENDOR_DIRS`.
    Never raises for an empty result (see :func:`load_documents`).
    """
    if not os.path.exists(path):
        raise CorpusError(f"corpus path does not exist: {path!r}")
    if max_file_bytes < 1:
        raise CorpusError(f"max_file_bytes must be >= 1, got {max_file_bytes}")
    root = os.path.abspath(path)
    if os.path.isfile(root):
        corpus = Corpus(root=os.path.dirname(root), source="a single file")
        listing: List[str] = [os.path.basename(root)]
        ignored: List[str] = []
        attrs: Dict[str, set] = {a: set() for a in _LINGUIST + (NOT_VENDORED,)}
        out_dirs: List[str] = []
    else:
        got = _git_listing(root) if use_git is not False else None
        if got is not None:
            listing, ignored = got
            corpus = Corpus(root=root, source="git ls-files --cached --others --exclude-standard")
            attrs = _git_attributes(root, listing) or _walk_attributes(root, listing)
        else:
            listing, ignored = _walk_listing(root)
            corpus = Corpus(root=root, source="directory walk honouring .gitignore files (pathspec)")
            attrs = _walk_attributes(root, listing)
        listing.sort(key=_walk_key)
        out_dirs = _output_dirs(root, listing, skip_dirs)
    wanted = _norm_exts(exts)
    inc, exc = _matcher(include), _matcher(exclude)
    skipped = corpus.skipped
    skipped += [Skipped(p, "ignored") for p in sorted(ignored, key=_walk_key)]
    seen: Dict[str, str] = {}
    total = 0
    # a file named on its own is taken wherever its link points; a tree's files must stay inside it
    real_root = os.path.dirname(os.path.realpath(root)) if os.path.isfile(root) else os.path.realpath(root)
    for rel in listing:
        name = rel.rsplit("/", 1)[-1]
        reason = None
        if _under(rel, out_dirs):
            reason = "cllm-output"
        elif rel in attrs["linguist-vendored"] or (not keep_vendored and _vendored(rel)
                                                   and rel not in attrs.get(NOT_VENDORED, ())):
            reason = "vendored"
        elif rel in attrs["linguist-generated"]:
            reason = "generated"
        elif name in LOCK_FILES:
            reason = "lock-file"
        elif ((wanted is not None and os.path.splitext(name)[1] not in wanted)
              or (inc is not None and not inc.match_file(rel))
              or (exc is not None and exc.match_file(rel))):
            reason = "not-selected"
        full = os.path.join(corpus.root, rel)
        if reason is None and not _inside(full, real_root):
            reason = "outside-root"
            log.warning("skipping %s: a link to %s, outside the corpus root %s", rel, os.path.realpath(full),
                        corpus.root)
            skipped.append(Skipped(rel, reason, -1))
            continue
        if reason is not None:
            skipped.append(Skipped(rel, reason, _size(full)))
            continue
        if max_bytes is not None and total >= max_bytes:
            skipped.append(Skipped(rel, "over-max-bytes", _size(full)))
            continue
        data, reason = read_document(full, max_file_bytes)
        if data is None:
            skipped.append(Skipped(rel, reason, _size(full)))
            continue
        reason = None
        if is_minified(name, data):
            reason = "minified"
        else:
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                log.debug("skipping %s: same content as %s", rel, seen[digest])
                reason = "duplicate"
            else:
                seen[digest] = rel
        if reason is not None:
            skipped.append(Skipped(rel, reason, len(data)))
            continue
        corpus.documents.append(Document(full, data, rel))
        total += len(data)
    return corpus


def read_document(fp: str, max_file_bytes: int = MAX_FILE_BYTES) -> Tuple[Optional[bytes], str]:
    """``(data, "")`` for a usable text file, else ``(None, reason)`` with reason
    ``"not-a-file"``, ``"empty"``, ``"too-large"`` (logged as a warning naming the
    file) or ``"binary"``. The one place a corpus file is read."""
    try:
        if not os.path.isfile(fp):
            return None, "not-a-file"
        size = os.stat(fp).st_size
        if size == 0:
            return None, "empty"
        if size > max_file_bytes:
            log.warning("skipping %s: %s bytes is above the per-file cap of %s bytes",
                        fp, f"{size:,}", f"{max_file_bytes:,}")
            return None, "too-large"
        with open(fp, "rb") as f:
            data = f.read()
    except OSError as e:
        log.warning("skipping %s: %s", fp, e)
        return None, "not-a-file"
    if not data:
        return None, "empty"
    if not is_text(data):
        return None, "binary"
    return data, ""


def _vendored(rel: str) -> bool:
    """Whether '/'-separated ``rel`` lies under a vendor directory."""
    return any(part in VENDOR_DIRS for part in rel.split("/")[:-1])


def _inside(path: str, real_root: str) -> bool:
    """Whether ``path``, with every symbolic link resolved, is ``real_root`` or below it."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def iter_documents(path: str, exts: Optional[Sequence[str]] = None) -> Iterator[Document]:
    """The documents of :func:`scan` under ``path`` (a file or directory), in corpus order."""
    yield from scan(path, list(exts) if exts else None).documents


def iter_files(path: str, exts: Optional[Iterable[str]] = None) -> Iterator[str]:
    """Paths of the corpus files under ``path`` (a file or directory), in corpus order."""
    for d in iter_documents(path, list(exts) if exts else None):
        yield d.path


def load_documents(path: str, exts: Optional[Sequence[str]] = None, max_bytes: Optional[int] = None,
                   **kw) -> List[Document]:
    """The documents of :func:`scan` (same arguments); logs the summary and
    raises :class:`CorpusError` if nothing usable is found."""
    corpus = scan(path, exts, max_bytes=max_bytes, **kw)
    sk = corpus.skipped_by_reason()
    why = ", ".join(f"{n} {r}" + (f" ({b:,} bytes)" if b else "") for r, (n, b) in sk.items())
    if not corpus.documents:
        what = f" with extensions {sorted(_norm_exts(exts))}" if exts else ""
        raise CorpusError(f"no usable text files{what} found under {path!r}"
                          + (f" (skipped: {why})" if why else ""))
    log.info("corpus: %s files, %s bytes from %s (%s); skipped: %s", f"{len(corpus.documents):,}",
             f"{corpus.total_bytes:,}", corpus.root, corpus.source.split(" ")[0], why or "nothing")
    return corpus.documents


def split_documents(docs: Sequence[Document], val_fraction: float) -> Tuple[List[Document], List[Document]]:
    """(train, val): whole documents held out by a stable hash of their relative path.

    Documents are ranked by ``sha256(relpath)`` and taken in that order until
    about ``val_fraction`` of the bytes are held out (a document that would
    overshoot the target by more than half is passed over; if all
    would, the smallest document is held out). The choice depends
    only on the paths and sizes, not on file order or the machine. Both lists
    keep corpus order. With fewer than two documents nothing is held out.
    """
    if val_fraction <= 0 or len(docs) < 2:
        return list(docs), []
    total = sum(len(d.data) for d in docs)
    target = val_fraction * total
    ranked = sorted(range(len(docs)), key=lambda i: hashlib.sha256(
        (docs[i].relpath or docs[i].path).encode("utf-8", "surrogateescape")).digest())
    val, got = set(), 0
    for i in ranked:
        if got >= target or len(val) == len(docs) - 1:
            break
        size = len(docs[i].data)
        if got + size <= 1.5 * target:
            val.add(i)
            got += size
    if not val:  # every document is larger than the target: hold out the smallest
        val.add(min(range(len(docs)), key=lambda i: (len(docs[i].data), ranked.index(i))))
    return [d for i, d in enumerate(docs) if i not in val], [d for i, d in enumerate(docs) if i in val]

