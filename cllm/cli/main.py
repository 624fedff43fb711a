"""The ``cllm`` command: ``train``, ``generate``, ``quantize``, ``export``, ``eval``, ``tokenize`` and ``info``."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import run_command

log = logging.getLogger("cllm")

#: one ``add_argument`` call as data: (flags, keywords)
_Arg = Tuple[Tuple[str, ...], Dict[str, Any]]


def _arg(*flags: str, **kw: Any) -> _Arg:
    """The arguments of one ``ArgumentParser.add_argument`` call."""
    return flags, kw


# arguments several commands share
#: what every command taking a model accepts (cllm.io.hub.resolve_model_path)
_MODEL_SOURCES = "a cllm checkpoint, a GPT-2 directory, or a hub id such as owner/name[@revision] (needs cllm[hub])"
_CHECKPOINT = _arg("checkpoint", help=_MODEL_SOURCES)
_THREADS = _arg("--threads", type=int, default=0, help="0 = all usable CPUs")
_WEIGHT_DTYPES = ("fp32", "bf16", "int8")
_INFILL_ORDER = _arg("--infill-order", choices=["spm", "psm"], default=None,
                     help="infill prompt order: spm (suffix first; the prompt cache reuses it while you type) or "
                          "psm (default: spm, or psm for a model trained without SPM examples)")


def _add_command(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int],
                help: str, description: Optional[str] = None, args: Sequence[_Arg] = ()) -> argparse.ArgumentParser:
    """Add sub-command ``name``, run by ``func``, with the arguments ``args`` (in order)."""
    p = sub.add_parser(name, help=help, description=description)
    for flags, kw in args:
        p.add_argument(*flags, **kw)
    p.set_defaults(func=func)
    return p


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ..training.options import TrainOptions
    p = _add_command(sub, "train", cmd_train, "train a model on a source tree",
                    "Train a GPT-2 on the text files under PATH (default: the Python standard library, capped "
                    "so the run takes a few minutes).",
                    [_arg("path", nargs="?", default=None, help="source tree or file (default: Python stdlib)")])
    TrainOptions.add_arguments(p)
    p.add_argument("--sample-tokens", type=int, default=96,
                   help="tokens of the sample printed at the end (default: %(default)s; 0: no sample)")
    p.add_argument("--sample-prompt", default="def ", help="prompt of the sample printed at the end "
                                                           "(default: %(default)r)")


def cmd_train(a: argparse.Namespace) -> int:
    """Run ``cllm train``."""
    from ..training.options import TrainOptions
    from ..training.loop import train
    t0 = time.perf_counter()
    opts = TrainOptions.from_namespace(a)
    model = train(a.path, **opts.kwargs())
    from ..training.distributed import init
    if not init(opts.distributed).is_root:  # rank 0 reports for an MPI job
        return 0
    s = model.summary
    print(f"{model!r}")
    if s.get("already_complete"):
        print(f"the run in {s['out_dir']} is already complete at step {s.get('steps', '?')}: nothing was trained "
              f"(pass a larger --max-steps to continue it); its summary:")
    print(f"corpus: {s['corpus_files']:,} files, {s['corpus_bytes']:,} bytes, {s['corpus_tokens']:,} tokens "
          f"(vocab {s['vocab_size']:,}; `cllm corpus PATH` shows what was skipped)")
    accum = f" x {s['grad_accum']} micro-batches" if s.get("grad_accum", 1) > 1 else ""
    print(f"trained {s['steps']:,} steps{accum} ({s['tokens']:,} tokens) in {s['train_seconds']:.1f}s "
          f"= {s['tokens_per_sec']:,.0f} tokens/s on "
          + (f"{s['ranks']} ranks x " if s.get("ranks", 1) > 1 else "") + f"{s['threads']} thread(s)")
    if s.get("first_loss") is None:
        print("no steps left to run: the run was already complete", end="")
    else:
        print(f"loss: first {s['first_loss']:.4f} -> last {s['train_loss']:.4f}", end="")
    if "val_loss" in s:
        print(f"; val loss {s['val_loss']:.4f} ({s.get('val_bpb', float('nan')):.3f} bits/byte)")
    else:
        print()
    if "fim_line_exact_match" in s:
        mid = f", middle {s['fim_line_middle_bpb']:.3f} bits/byte" if "fim_line_middle_bpb" in s else ""
        print(f"infilling: exact match {100 * s['fim_line_exact_match']:.1f}% of {int(s['fim_line_cases'])} "
              f"held-out lines{mid}")
    if "init_val_loss" in s:
        print(f"fine-tuned from {opts.init_from}: val loss {s['init_val_loss']:.4f} before training")
    if a.verbose:
        for st in model.sphere_stats():
            print(f"  sphere {st['sphere']:>3} (parent {st['parent']:>3}): {st['tasks']} tasks, "
                  f"busy {st['busy_seconds']:.2f}s ({100 * st['busy_fraction']:.0f}%)")
    out = os.path.abspath(s.get("out_dir", opts.out_dir))
    print(f"checkpoint: {out}")
    plot = os.path.join(out, "loss.png")
    print(f"metrics: {os.path.join(out, 'metrics.jsonl')}"
          + (f", {plot}" if os.path.isfile(plot) else " (pip install \"cllm[plot]\" for loss.png)"))
    if a.sample_tokens > 0:
        text = model.generate(a.sample_prompt, max_new_tokens=a.sample_tokens, temperature=0.8,
                              top_k=40, seed=a.seed)
        print("sample:\n" + a.sample_prompt + text)
    print(f"total time {time.perf_counter() - t0:.1f}s")
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = _add_command(sub, "generate", cmd_generate, "complete a prompt with a checkpoint",
                    "Stream a completion of the prompt to stdout. CHECKPOINT is a directory written by cllm "
                    "(train or quantize), a Hugging Face GPT-2 directory (save_pretrained, with a byte-level "
                    "BPE tokenizer.json), or a hub id such as codeparrot/codeparrot-small (downloaded into the "
                    "Hugging Face cache; needs cllm[hub]).",
                    [_CHECKPOINT,
                     _arg("-n", "--max-tokens", type=int, default=128,
                         help="tokens to generate per sample (default: %(default)s)"),
                     _arg("-t", "--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)"),
                     _arg("-k", "--top-k", type=int, default=40, help="0 disables top-k (default: %(default)s)"),
                     _arg("--top-p", type=float, default=1.0,
                         help="nucleus sampling mass, 1 disables (default: %(default)s)"),
                     _arg("-s", "--seed", type=int, default=None, help="sampling seed (default: random)"),
                     _THREADS,
                     _arg("--dtype", choices=_WEIGHT_DTYPES, default=None,
                         help="weight storage (default: the checkpoint's own; fp32 for a full-precision one)"),
                     _arg("--stop", action="append", default=[], metavar="STR",
                         help="stop a sample before this text (repeatable)"),
                     _arg("--num-samples", type=int, default=1, metavar="N",
                         help="independent samples (seed, seed+1, ...)"),
                     _arg("--no-heal", dest="heal", action="store_false",
                         help="turn off token healing (by default the prompt's last token is re-generated so a "
                              "prompt ending mid-token completes naturally)"),
                     _arg("-v", "--verbose", action="store_true",
                         help="print load time, time to first token and tokens/s on stderr (and tracebacks on "
                              "errors)")])
    src = p.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", default="", help="prompt text ('-' reads it from stdin)")
    src.add_argument("--prompt-file", metavar="FILE", help="read the prompt from FILE")
    src.add_argument("--prefix-file", metavar="FILE",
                     help="infilling: the code before the cursor (same as --prompt-file)")
    suf = p.add_mutually_exclusive_group()
    suf.add_argument("--suffix", default=None, metavar="TEXT",
                     help="infilling: the code after the cursor; prints only the middle the model fills in "
                          "(needs a model trained with fill-in-the-middle tokens)")
    suf.add_argument("--suffix-file", metavar="FILE", help="infilling: read the code after the cursor from FILE")
    p.add_argument(*_INFILL_ORDER[0], **_INFILL_ORDER[1])


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def _read_prompt(a: argparse.Namespace) -> str:
    if a.prompt_file is not None or a.prefix_file is not None:
        return _read_text(a.prompt_file if a.prompt_file is not None else a.prefix_file)
    if a.prompt == "-":
        return sys.stdin.read()
    return a.prompt


def cmd_generate(a: argparse.Namespace) -> int:
    """Run ``cllm generate``: stream the completion(s) to stdout."""
    t0 = time.perf_counter()
    from ..errors import ConfigError
    if a.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {a.num_samples}")
    from ..inference.engine import InferenceModel
    prompt = _read_prompt(a)
    model = InferenceModel.load(a.checkpoint, dtype=a.dtype, threads=a.threads)
    t_load = time.perf_counter() - t0
    suffix = _read_text(a.suffix_file) if a.suffix_file is not None else a.suffix
    out = sys.stdout
    for k in range(a.num_samples):
        if k:
            out.write("\n" + "-" * 40 + "\n")
        if suffix is None:
            out.write(prompt)
            out.flush()
        seed = None if a.seed is None else a.seed + k
        t1 = time.perf_counter()
        t_first, ntok = None, 0
        pieces = (model.infill_stream(prompt, suffix, max_new_tokens=a.max_tokens, temperature=a.temperature,
                                      top_k=a.top_k, top_p=a.top_p, seed=seed, stop=a.stop,
                                      order=a.infill_order)
                  if suffix is not None else
                  model.stream(prompt, max_new_tokens=a.max_tokens, temperature=a.temperature, top_k=a.top_k,
                               top_p=a.top_p, seed=seed, stop=a.stop, heal=a.heal))
        for piece in pieces:
            if t_first is None:
                t_first = time.perf_counter()
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
        if a.verbose:
            t2 = time.perf_counter()
            ntok = model.last_generated
            rate = (ntok - 1) / (t2 - t_first) if t_first and ntok > 1 and t2 > t_first else float("nan")
            print(f"cllm: {model!r}; load {1e3 * t_load:.1f} ms; time to first token "
                  f"{1e3 * ((t_first or t2) - t1):.1f} ms ({1e3 * ((t_first or t2) - t0):.1f} ms since start "
                  f"of the command); {ntok} tokens, {rate:.1f} tokens/s after the first", file=sys.stderr)
    return 0


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    _add_command(sub, "quantize", cmd_quantize, "write an int8 or bf16 copy of a checkpoint",
                "Quantize CHECKPOINT's weights and write a checkpoint directory OUT that `cllm generate` / "
                "cllm.load open without re-quantizing (format: docs/inference.md).",
                [_arg("checkpoint", help="full-precision model: " + _MODEL_SOURCES),
                 _arg("out", help="output directory"),
                 _arg("--dtype", choices=("int8", "bf16"), default="int8", help="storage format (default int8)")])


def cmd_quantize(a: argparse.Namespace) -> int:
    """Run ``cllm quantize``."""
    from ..inference.engine import quantize
    t0 = time.perf_counter()
    out = quantize(a.checkpoint, a.out, dtype=a.dtype)
    print(f"wrote {a.dtype} checkpoint {os.path.abspath(out)} in {time.perf_counter() - t0:.2f}s")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    _add_command(sub, "export", cmd_export, "write a GGUF file for llama.cpp, Ollama and LM Studio",
                "Export CHECKPOINT's model to a GGUF file (architecture gpt2, llama.cpp's tensor names and "
                "layout, the tokenizer with its merges and FIM tokens) and an Ollama Modelfile beside it "
                "(model.gguf -> model.Modelfile). Needs the gguf extra: pip install \"cllm[gguf]\". The "
                "tokenizer must use GPT-2's pre-tokenizer (train with --pretokenizer gpt2): llama.cpp does not "
                "implement cllm's code-aware one. Guide: docs/gguf.md.",
                [_arg("checkpoint", help="full-precision model: " + _MODEL_SOURCES),
                 _arg("-o", "--output", required=True, metavar="FILE", help="the GGUF file to write"),
                 _arg("--dtype", choices=("f32", "f16", "bf16", "q8_0"), default="f16",
                     help="storage of the matrices and token embedding (norms, biases and position embeddings "
                          "stay f32; default: %(default)s)"),
                 _arg("--no-modelfile", dest="modelfile", action="store_false",
                     help="do not write the Ollama Modelfile"),
                 _arg("--force", action="store_true", help="replace existing output files")])


def cmd_export(a: argparse.Namespace) -> int:
    """Run ``cllm export``."""
    from ..inference.gguf import export
    t0 = time.perf_counter()
    out = export(a.checkpoint, a.output, dtype=a.dtype, overwrite=a.force, modelfile=a.modelfile)
    extra = f" and {os.path.splitext(out)[0]}.Modelfile" if a.modelfile else ""
    print(f"wrote {a.dtype} GGUF {os.path.abspath(out)}{extra} in {time.perf_counter() - t0:.2f}s")
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    _add_command(sub, "eval", cmd_eval, "loss and bits/byte of a checkpoint on text files",
                "Loss (nats/token) and bits per byte of CHECKPOINT on the text files under PATH, with the "
                "weights stored as --dtype.",
                [_CHECKPOINT,
                 _arg("path", nargs="?", default=None, help="text file or directory (or use --split)"),
                 _arg("--split", choices=["val", "train"], default=None,
                     help="evaluate on this split of the run CHECKPOINT was trained by (its held-out files: val)"),
                 _arg("--dtype", choices=_WEIGHT_DTYPES, default=None,
                     help="weight storage (default: the checkpoint's own)"),
                 _THREADS,
                 _arg("-e", "--ext", action="append", default=None, metavar="EXT",
                     help="only files with this extension (repeatable)"),
                 _arg("--max-bytes", type=int, default=None, metavar="N", help="evaluate at most N bytes"),
                 _arg("--fim", choices=["line", "span"], default=None,
                     help="measure infilling instead: 'line' masks one whole line (prefix and suffix from the "
                          "file around it), 'span' a random span; exact match of the generated middle, and its "
                          "bits per byte"),
                 _arg("--samples", type=int, default=200, metavar="N", help="--fim cases (default: %(default)s)"),
                 _arg("--no-suffix", dest="use_suffix", action="store_false",
                     help="--fim: show the model the prefix only (a left-to-right completion of the same cursor)"),
                 _INFILL_ORDER,
                 _arg("-q", "--quiet", action="store_true", help="no progress bar")])


def _add_serve(sub: argparse._SubParsersAction) -> None:
    _add_command(sub, "serve", cmd_serve, "serve a checkpoint over HTTP (OpenAI and llama.cpp APIs)",
                "Serve CHECKPOINT to editors and tools: OpenAI's /v1/completions and /v1/models, llama.cpp's "
                "/completion, /infill, /tokenize, /detokenize, /health and /props, and /metrics (Prometheus). "
                "Runs until Ctrl-C or SIGTERM. Needs the serve extra: pip install \"cllm[serve]\".",
                [_CHECKPOINT,
                 _arg("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this "
                                                          "machine only)"),
                 _arg("--port", type=int, default=8080, help="port (default: %(default)s)"),
                 _arg("--dtype", choices=_WEIGHT_DTYPES, default=None,
                     help="weight storage (default: the checkpoint's own; fp32 for a full-precision one)"),
                 _THREADS,
                 _arg("--api-key", default=None, metavar="KEY",
                     help="require 'Authorization: Bearer KEY' on every route but /health"),
                 _arg("--max-queue", type=int, default=16, metavar="N",
                     help="requests that may wait for the model; more get 503 (default: %(default)s)"),
                 _arg("--max-tokens", type=int, default=None, metavar="N",
                     help="server-wide cap on tokens generated per request (default: the context)"),
                 _arg("--ctx", type=int, default=None, metavar="N",
                     help="context length to serve, at most the model's (default: the model's)"),
                 _INFILL_ORDER])


def cmd_serve(a: argparse.Namespace) -> int:
    """Run ``cllm serve``."""
    from ..server.run import serve
    logging.getLogger("cllm.server").setLevel(logging.INFO)
    serve(a.checkpoint, host=a.host, port=a.port, dtype=a.dtype, threads=a.threads, api_key=a.api_key,
          max_queue=a.max_queue, max_tokens=a.max_tokens, ctx=a.ctx, infill_order=a.infill_order)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """Run ``cllm eval``."""
    from ..errors import ConfigError
    from ..inference.evaluation import evaluate
    from ..inference.engine import InferenceModel
    if (a.path is None) == (a.split is None):
        raise ConfigError("cllm eval: give either PATH or --split val|train")
    source: Any = a.path
    if a.split is not None:
        from ..training.loop import run_split
        docs = run_split(a.checkpoint, a.split)
        if not docs:
            raise ConfigError(f"{a.checkpoint}: its {a.split} split is empty (val_fraction 0, or one file)")
        source = [d.data for d in docs]
    model = InferenceModel.load(a.checkpoint, dtype=a.dtype, threads=a.threads)
    if a.fim:
        from ..inference.evaluation import evaluate_fim
        f = evaluate_fim(model, source, mode=a.fim, samples=a.samples, exts=a.ext, max_bytes=a.max_bytes,
                         use_suffix=a.use_suffix, order=a.infill_order, progress=not a.quiet)
        how = f"{(a.infill_order or model.infill_order).upper()} infill prompts" if f["infill"] else "prefix only"
        bpb = f", middle {f['middle_bits_per_byte']:.4f} bits/byte" if "middle_bits_per_byte" in f else ""
        print(f"{a.checkpoint} ({model.dtype}): {a.fim} infilling ({how}): exact match "
              f"{100 * f['exact_match']:.1f}% of {int(f['cases'])} cases{bpb} ({f['seconds']:.1f}s)")
        return 0
    r = evaluate(model, source, exts=a.ext, max_bytes=a.max_bytes, progress=not a.quiet)
    print(f"{a.checkpoint} ({model.dtype}): loss {r['loss']:.4f} nats/token, {r['bits_per_byte']:.4f} bits/byte "
          f"over {int(r['tokens']):,} tokens / {int(r['bytes']):,} bytes ({r['seconds']:.1f}s)")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    _add_command(sub, "info", cmd_info, "show CPU features / kernel path, or a checkpoint's config",
                args=[_arg("checkpoint", nargs="?", help=_MODEL_SOURCES),
                      _arg("--system", action="store_true",
                          help="CPU features (incl. AMX / AVX512-BF16), chosen kernel path and precision, threads"),
                      _arg("-v", "--verbose", action="store_true", help="tracebacks on errors")])


def cmd_info(a: argparse.Namespace) -> int:
    """Run ``cllm info``."""
    import cllm
    if a.system or not a.checkpoint:
        info = cllm.cpu_info()
        print(f"cllm {cllm.__version__}")
        print(f"cpu: avx2+fma={'yes' if info['avx2_fma'] else 'no'} avx512={'yes' if info['avx512'] else 'no'}")
        yn = {True: "yes", False: "no"}
        print(f"matrix: avx512_bf16={yn[info['avx512_bf16']]} avx512_vnni={yn[info['avx512_vnni']]} "
              f"amx_bf16={yn[info['amx_bf16']]} amx_int8={yn[info['amx_int8']]} (AMX counts only with OS support)")
        print(f"kernel path: {info['isa']} (override with CLLM_ISA=scalar|avx2|avx512)")
        print(f"training precision 'auto' picks: {info['precision_auto']}")
        print(f"usable cpus (affinity mask): {info['cpus']}")
        c, g = info["caches"], info["gemm_blocking"]
        l3 = f"L3 {c['l3'] >> 10} KiB (shared by {c['l3_sharing']} cpus)" if c["l3"] else "L3 unknown"
        print(f"caches: L1d {c['l1d'] >> 10} KiB, L2 {c['l2'] >> 10} KiB, {l3} (from {c['source']})")
        print(f"fp32 gemm blocking ({info['isa']}): micro-kernel {g['mr']}x{g['nr']}, MC={g['mc']} KC={g['kc']} "
              f"NC={g['nc']} (derived from the caches unless CLLM_GEMM_MC/KC/NC are set)")
    if a.checkpoint:
        from ..model.checkpoint import open_checkpoint
        ck = open_checkpoint(a.checkpoint)
        m = cllm.load(ck, threads=1)
        print(f"checkpoint: {ck.path}")
        print(f"model: {m!r} (as loaded here)")
        if ck.has_state():
            st = ck.state()
            o = st.get("options") if isinstance(st.get("options"), dict) else {}
            used = {"precision": st.get("precision", o.get("precision")), "threads": st.get("threads"), "ranks": st.get("ranks", 1),
                    "deterministic": o.get("deterministic", False), "batch": st.get("batch"),
                    "seq_len": o.get("seq_len"), "fim_rate": o.get("fim_rate")}
            print("trained with: " + ", ".join(f"{k}={v}" for k, v in used.items() if v is not None))
            print(json.dumps({k: st.get(k) for k in ("step", "total_steps", "epoch", "summary")}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands like git/pip)."""
    p = argparse.ArgumentParser(prog="cllm", description="Train small GPT models on code, on CPUs.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_generate(sub)
    _add_quantize(sub)
    _add_export(sub)
    _add_eval(sub)
    _add_serve(sub)
    try:
        from . import tokenize as cli_tokenize
        cli_tokenize.register(sub)
    except ImportError:
        pass
    from . import corpus as cli_corpus
    from ..training import plot
    cli_corpus.register(sub)
    plot.register(sub)
    _add_info(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``cllm`` and ``python -m cllm``."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.version:
        from .. import __version__
        print(f"cllm {__version__}")
        return 0
    if not a.command:
        parser.print_help()
        return 2
    verbose = getattr(a, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s" if verbose else "cllm: %(message)s")
    if a.command == "train" and not verbose:
        logging.getLogger("cllm").setLevel(logging.INFO)
    logging.getLogger("cllm.io.hub").setLevel(logging.DEBUG if verbose else logging.INFO)  # say when a model downloads
    return run_command(a)
