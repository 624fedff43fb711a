"""Side-by-side benchmark: cllm's C BPE vs Hugging Face ``tokenizers``.

Corpus: ~20 MB of the running interpreter's stdlib ``.py`` files (override
with --max-bytes / --path). Both tokenizers use the same pre-tokenizer
(cllm's ``Split`` regex + ``ByteLevel``), the same vocabulary size, the same
``min_frequency`` and the same special token, and both run on ONE thread:
``RAYON_NUM_THREADS=1`` is set before ``tokenizers`` is imported (it governs
HF training and encoding alike; cllm's trainer and encoder are single-threaded).

Timings are the best (minimum) of --repeat runs.
* train: wall time of the whole training call, from in-memory documents
  (cllm: ``Tokenizer.train(list_of_bytes)``; HF: ``train_from_iterator`` over
  the decoded documents).
* encode: one call per document over the whole corpus (HF: ``encode(str)``
  with ``add_special_tokens=False``, cllm: ``encode(bytes)``), MB/s of input
  bytes; cllm's pre-token cache starts empty (fresh load) every repetition.
Then: bytes per token, and an exactness check (HF ids == cllm ids).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]  # bench/ (lib puts the repository root there too)
import lib  # noqa: E402,F401
from cllm.data.corpus import default_corpus_path, load_documents  # noqa: E402
from cllm.data.tokenizer import EOT, Tokenizer, pre_tokenizer_json  # noqa: E402


def hf_train(texts, vocab_size, min_frequency):
    import json

    import tokenizers
    from tokenizers import decoders, pre_tokenizers, trainers
    tok = tokenizers.Tokenizer.from_str(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": pre_tokenizer_json(), "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {}, "merges": []}}))
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def best(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default=default_corpus_path())
    ap.add_argument("--max-bytes", type=int, default=20_000_000)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        import tokenizers
    except ImportError:
        ap.error("this benchmark compares with Hugging Face tokenizers, which is not installed "
                 "(pip install tokenizers)")

    docs = load_documents(args.path, exts=[".py"], max_bytes=args.max_bytes)
    blobs = [d.data for d in docs]
    texts = [b.decode("utf-8") for b in blobs]
    nbytes = sum(len(b) for b in blobs)
    print(f"corpus: {len(docs)} files, {nbytes / 1e6:.2f} MB from {args.path}")
    print(f"tokenizers {tokenizers.__version__}, RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}, "
          f"vocab {args.vocab_size}, min_frequency {args.min_frequency}, best of {args.repeat}")

    t_c, ctok = best(lambda: Tokenizer.train(blobs, vocab_size=args.vocab_size,
                                             min_frequency=args.min_frequency, progress=False),
                     args.repeat)
    t_hf, _ = best(lambda: hf_train(texts, args.vocab_size, args.min_frequency), args.repeat)
    print(f"train   cllm {t_c:7.2f} s   tokenizers {t_hf:7.2f} s   "
          f"ratio cllm/tokenizers {t_c / t_hf:.3f} (target <= 1)")

    with tempfile.TemporaryDirectory() as d:
        path = ctok.save(d)
        hf = tokenizers.Tokenizer.from_file(path)

        def c_encode():
            fresh = Tokenizer.load(path)  # empty pre-token cache
            t0 = time.perf_counter()
            ids = [fresh.encode_np(b) for b in blobs]
            return time.perf_counter() - t0, ids

        def hf_encode():
            t0 = time.perf_counter()
            ids = [hf.encode(t, add_special_tokens=False).ids for t in texts]
            return time.perf_counter() - t0, ids

        c_runs = [c_encode() for _ in range(args.repeat)]
        hf_runs = [hf_encode() for _ in range(args.repeat)]
        tc = min(r[0] for r in c_runs)
        th = min(r[0] for r in hf_runs)
        c_ids, hf_ids = c_runs[0][1], hf_runs[0][1]
        ntok = sum(len(x) for x in c_ids)
        same = all(list(a) == b for a, b in zip(c_ids, hf_ids))
        print(f"encode  cllm {nbytes / tc / 1e6:7.2f} MB/s   tokenizers {nbytes / th / 1e6:7.2f} MB/s   "
              f"ratio cllm/tokenizers {th / tc:.2f}x (target >= 1)")
        t_big = min(best(lambda: Tokenizer.load(path).encode_np(b"".join(blobs)), 1)[0]
                    for _ in range(args.repeat))
        print(f"encode  cllm one call on the concatenated corpus: {nbytes / t_big / 1e6:.2f} MB/s "
              f"(includes loading the tokenizer)")
        print(f"tokens  {ntok}   bytes/token {nbytes / ntok:.3f} at vocab {len(ctok)}   "
              f"ids identical to tokenizers: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
