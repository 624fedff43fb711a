"""The benchmark scripts under bench/ run end to end with tiny settings and print
complete tables (numbers, not placeholders), and their helpers compute what they say."""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)


def run_script(name: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, os.path.join(BENCH, name), *args], capture_output=True, text=True,
                       env=env, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def row(out: str, *cells: str) -> list:
    """The cells of the first table row starting with `cells`."""
    for line in out.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if parts[:len(cells)] == list(cells):
            return parts
    raise AssertionError(f"no row {cells} in:\n{out}")


def number(cell: str) -> float:
    return float(cell.rstrip("%x").replace(",", ""))


def test_flops_per_token_matches_parameter_count() -> None:
    import cllm
    from cllm.config import ModelConfig
    from train_throughput import CONFIGS, flops_per_token
    cfg = CONFIGS["B"]
    m = cllm.Model.create(ModelConfig(cfg["vocab_size"], cfg["seq_len"], cfg["num_layers"], cfg["num_heads"],
                                      cfg["embed_dim"]), threads=1, batch_size=1, seq_len=8)
    n = m.num_params - cfg["seq_len"] * cfg["embed_dim"]  # without the position embedding
    L, C, T = cfg["num_layers"], cfg["embed_dim"], cfg["seq_len"]
    assert flops_per_token(cfg) == 6 * n + 12 * L * C * T


@pytest.mark.slow
def test_train_throughput_table() -> None:
    out = run_script("train_throughput.py", "--configs", "A", "--threads", "1", "--reps", "1", "--steps", "1",
                     "--warmup", "0", "--peak-seconds", "0.02", "--sides", "cllm-fp32,cllm-bf16,torch-fp32")
    assert "CPU: " in out and "fma_avx2" in out
    for side in ("cllm-fp32", "torch-fp32"):
        r = row(out, "A", "1", side)
        assert number(r[3]) > 0 and 0 < number(r[7]) and r[8].startswith("fma_")
    ratios = row(out.split("## Ratios")[1], "A", "1")  # config, threads, cllm-fp32 / torch-fp32, ...
    assert re.fullmatch(r"\d+\.\d\dx", ratios[2])
    bf = row(out, "A", "1", "cllm-bf16")
    assert bf[3] != "n/a" or "n/a" in bf[-1]  # measured, or the reason it is not
    assert "torch AdamW: " in out


def test_attention_table() -> None:
    out = run_script("attention.py", "--configs", "2x33x40x2", "--threads", "1", "--reps", "1",
                     "--min-time", "0.01", "--peak-seconds", "0.02")
    assert "CPU: " in out and "Peak measured" in out
    r = row(out, "2x33x40x2", "2x33x40x2", "1")
    # cllm fwd / bwd and torch fwd / bwd GFLOP/s with their % of peak, both totals, the ratio
    for i in (3, 5, 7, 11, 12):
        assert number(r[i]) > 0, r
    for i in (4, 6, 8):
        assert r[i].endswith("%") and number(r[i]) > 0, r
    assert re.fullmatch(r"\d+\.\d\dx", r[13]), r


def test_attention_flops_count() -> None:
    import attention
    fwd, bwd = attention.flops((1, 3, 4, 2))  # B*NH = 2, hs = 2, 6 (query, key) pairs with key <= query
    assert fwd == 2 * 2 * 2 * 2 * 6 and bwd == 2 * fwd  # 2 products x 2 FLOPs per multiply-add
    assert attention.parse_shape("B") == (8, 256, 384, 6)
    with pytest.raises(ValueError):
        attention.parse_shape("2x3x5x2")


@pytest.mark.slow
def test_bench_gemm_table() -> None:
    out = run_script("bench_gemm.py", "--shapes", "fwd_attn_out", "--reps", "1", "--min-time", "0.01",
                     "--peak-seconds", "0.02")
    r = row(out, "fwd_attn_out")
    assert number(r[3]) > 0 and number(r[5]) > 0 and number(r[7]) > 0
    assert "% peak" in out


@pytest.mark.slow
def test_decode_table_and_llama2c_files(tmp_path) -> None:
    import numpy as np
    import decode
    m = dict(vocab_size=64, num_layers=2, num_heads=2, embed_dim=16, context_len=32)
    decode.write_llama2c(str(tmp_path / "m.bin"), m, hidden=64)
    data = (tmp_path / "m.bin").read_bytes()
    assert struct.unpack("7i", data[:28]) == (16, 64, 2, 2, 2, 64, 32)
    C, L, V, H, P, hs = 16, 2, 64, 64, 32, 8
    floats = V * C + L * C + 4 * L * C * C + L * C + 3 * L * C * H + C + P * hs
    assert len(data) == 28 + 4 * floats
    emb = np.frombuffer(data[28:28 + 4 * V * C], np.float32).reshape(V, C)
    assert not emb[1].any() and emb[2].any()  # BOS row zero: greedy never stops early
    decode.write_llama2c_tokenizer(str(tmp_path / "t.bin"), 64)
    tok = (tmp_path / "t.bin").read_bytes()
    assert struct.unpack("i", tok[:4])[0] == 4 and tok[4:15] == struct.pack("fi", 0.0, 3) + b"<0>"
    out = run_script("decode.py", "--threads", "1", "--reps", "1", "--tokens", "8", "--peak-seconds", "0.02",
                     "--sides", "cllm-fp32,llama2c,hf")
    for side in ("cllm-fp32", "hf"):
        r = row(out, "B", "1", side)
        assert number(r[3]) > 0 and number(r[6]) > 0 and number(r[9]) > 0
    assert "--llama2c" in row(out, "B", "1", "llama2c")[-1]  # skipped with the reason
