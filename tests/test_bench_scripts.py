"""The benchmark scripts under bench/ run end to end with tiny settings and print
complete tables (numbers, not placeholders), and their helpers (bench/lib)
compute what they say."""
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
    from train_throughput import CONFIGS, flops_per_token
    cfg = CONFIGS["B"]
    m = cllm.Model.create(cllm.ModelConfig(cfg["vocab_size"], cfg["seq_len"], cfg["num_layers"], cfg["num_heads"],
                                      cfg["embed_dim"]), threads=1, batch_size=1, seq_len=8)
    n = m.num_params - cfg["seq_len"] * cfg["embed_dim"]  # without the position embedding
    L, C, T = cfg["num_layers"], cfg["embed_dim"], cfg["seq_len"]
    assert flops_per_token(cfg) == 6 * n + 12 * L * C * T


def test_flops_per_token_counts_multi_query_attention() -> None:
    from train_throughput import CONFIGS, flops_per_token
    S = CONFIGS["S"]  # bigcode/tiny_starcoder_py's shape, fine-tuned at T = 1024
    assert (S["vocab_size"], S["num_layers"], S["num_heads"], S["embed_dim"], S["context_len"], S["n_kv_heads"],
            S["seq_len"], S["batch_size"], S["model_type"]) == (49152, 20, 12, 768, 8192, 1, 1024, 1, "gpt_bigcode")
    # by hand: C = 768, hs = 64, one K/V head: c_attn 768 -> 768 + 2*64 = 896 columns
    layer = (2 * 768                 # ln_1
             + 768 * 896 + 896       # c_attn
             + 768 * 768 + 768       # attention c_proj
             + 2 * 768               # ln_2
             + 768 * 3072 + 3072     # c_fc (n_inner 3072)
             + 3072 * 768 + 768)     # MLP c_proj
    assert layer == 6_005_120
    n = 49152 * 768 + 20 * layer + 2 * 768  # tied wte (once) + layers + ln_f; no wpe
    assert n + 8192 * 768 == 164_144_128  # the published model's parameter count (with its 8192-row wpe)
    assert flops_per_token(S) == 6 * n + 12 * 20 * 768 * 1024 == 1_135_859_712
    # the position embedding's rows do not count, whatever they are
    assert flops_per_token(dict(S, context_len=1024)) == flops_per_token(S)


def _has(module: str) -> bool:
    """``module`` is installed."""
    import importlib.util
    return importlib.util.find_spec(module) is not None


def test_flops_per_token_matches_transformers_gpt_bigcode() -> None:
    """The FLOPs of s and S count the parameters transformers' GPTBigCode has (built on the meta device)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import _torch_bigcode
    from train_throughput import CONFIGS, flops_per_token
    for name in ("s", "S"):
        cfg = CONFIGS[name]
        with torch.device("meta"):
            model = transformers.GPTBigCodeForCausalLM(_torch_bigcode.bigcode_config(cfg))
        assert model.lm_head.weight is model.transformer.wte.weight  # tied: counted once
        n = sum(p.numel() for p in model.parameters()) - cfg["context_len"] * cfg["embed_dim"]
        assert flops_per_token(cfg) == 6 * n + 12 * cfg["num_layers"] * cfg["embed_dim"] * cfg["seq_len"], name
    with pytest.raises(ValueError, match="K/V heads"):
        _torch_bigcode.bigcode_config(dict(CONFIGS["s"], n_kv_heads=2))


@pytest.mark.parametrize("sides", ["torch-fp32", pytest.param("torch-fp32,torch-bf16", marks=pytest.mark.slow)])
def test_train_throughput_gpt_bigcode_torch_side(sides: str) -> None:
    """Config s with transformers' GPTBigCodeForCausalLM as the torch side (bf16: autocast, slow
    without native BF16)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = run_script("train_throughput.py", "--configs", "s", "--threads", "1", "--reps", "1", "--steps", "1",
                     "--warmup", "0", "--peak-seconds", "0.02", "--sides", sides)
    assert re.search(r"torch side, config s \(gpt_bigcode\): transformers \S+ GPTBigCodeForCausalLM \(sdpa\)", out)
    for side in sides.split(","):
        r = row(out, "s", "1", side)
        assert number(r[3]) > 0 and number(r[5]) > 0 and number(r[9]) > 0, r
    if "torch-bf16" in sides:
        assert re.fullmatch(r"\d+\.\d\dx", row(out.split("## Ratios")[1], "s", "1")[2])


def test_train_throughput_gpt_bigcode_cllm_side() -> None:
    """Config s on cllm beside the transformers reference."""
    import cllm
    from train_throughput import CONFIGS, flops_per_token
    cfg = CONFIGS["s"]
    m = cllm.Model.create(cllm.ModelConfig(cfg["vocab_size"], cfg["context_len"], cfg["num_layers"],
                                           cfg["num_heads"], cfg["embed_dim"], model_type="gpt_bigcode",
                                           n_kv_heads=cfg["n_kv_heads"]), threads=1, batch_size=1, seq_len=8)
    n = m.num_params - cfg["context_len"] * cfg["embed_dim"]
    assert flops_per_token(cfg) == 6 * n + 12 * cfg["num_layers"] * cfg["embed_dim"] * cfg["seq_len"]
    sides = "cllm-fp32,torch-fp32" if _has("torch") and _has("transformers") else "cllm-fp32"
    out = run_script("train_throughput.py", "--configs", "s", "--threads", "1", "--reps", "1", "--steps", "1",
                     "--warmup", "0", "--peak-seconds", "0.02", "--sides", sides)
    r = row(out, "s", "1", "cllm-fp32")
    assert number(r[3]) > 0 and number(r[7]) > 0 and r[8].startswith("fma_"), r
    if "torch" in sides:
        assert re.fullmatch(r"\d+\.\d\dx", row(out.split("## Ratios")[1], "s", "1")[2])


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


def test_generate_paths_table() -> None:
    out = run_script("generate_paths.py", "--models", "tiny", "--threads", "1,2", "--reps", "1", "--tokens", "4",
                     "--prompt-tokens", "3", "--peak-seconds", "0.02")
    assert "CPU: " in out and "Peak measured" in out
    for th in ("1", "2"):
        for side, cls in (("model-load", "Model"), ("model-trained", "Model"), ("inference", "InferenceModel")):
            r = row(out, "TINY", th, side)
            assert number(r[3]) > 0 and number(r[4]) > 0, r
            assert re.fullmatch(r"\d+\.\d\dx", r[5]) and r[6] == f"{cls}, {th} thread(s)", r
        summary = row(out.split("## Model / InferenceModel")[1], "TINY", th)
        assert number(summary[2].split()[0]) > 0, summary  # the measured FMA peak
        assert all(re.fullmatch(r"\d+\.\d\dx \((met|NOT met)\)", c) for c in summary[3:5]), summary
        # the same weights through the same decoder: the same greedy tokens
        assert f"model TINY, {th} thread(s): greedy ids of model-load == inference (4 tokens)" in out


def test_generate_paths_rejects_a_prompt_past_the_context() -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, os.path.join(BENCH, "generate_paths.py"), "--models", "tiny",
                        "--tokens", "120", "--prompt-tokens", "16"], capture_output=True, text=True, env=env,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 2 and "exceeds the context length of model TINY (128)" in p.stderr


def test_profile_step_table() -> None:
    out = run_script("profile_step.py", "--config", "A", "--threads", "1", "--steps", "1")
    assert "CPU: " in out and "tokens/s" in out
    assert number(row(out, "(other: python, batching, waits)")[1]) >= 0
    assert "| op | ms/step | share of step |" in out


def test_gemm_blocking_table() -> None:
    out = run_script("gemm_blocking.py", "--shapes", "fwd_attn_out", "--blockings", "0:64:0", "--reps", "1",
                     "--min-time", "0.005", "--clock", "cpu")
    assert out.startswith("CPU: ")
    r = next(line for line in out.splitlines() if line.startswith("| fwd_attn_out:"))
    cells = [c.strip() for c in r.strip("|").split("|")]
    assert all(number(c.split()[0]) > 0 for c in cells[1:3]), cells


def test_lib_tables_and_command_line() -> None:
    from lib.cli import GridArgs, comma_list
    from lib.tables import fmt_bytes, num, pct, ratio, table
    assert table(["a", "b"], [[1, 2.5]]).splitlines() == ["| a | b |", "|---|---:|", "| 1 | 2.5 |"]
    assert (fmt_bytes(1536), fmt_bytes(100), pct(0.1234), num(12345.6), num(None), ratio(3, 2), ratio(None, 2)) \
        == ("1.5 KiB", "100 B", "12.3%", "12,346", "n/a", "1.50x", "n/a")
    assert comma_list(" 1, 2,,3", int) == [1, 2, 3]
    g = GridArgs("Doc.", "models", ["B", "TINY"], "B", ["x", "y"])
    a, models, threads, sides = g.parse(["--models", "b,tiny", "--threads", "2", "--sides", "y"])
    assert (models, threads, sides) == (["B", "TINY"], [2], ["y"])
    with pytest.raises(SystemExit):
        g.parse(["--models", "Q"])
    g = GridArgs("Doc.", "configs", ["S", "s", "B"], "B", ["x"])  # names differing only in case stay apart
    assert g.parse(["--configs", "s,S,b"])[1] == ["s", "S", "B"]


def test_lib_machine_mfu_and_peaks() -> None:
    import cllm
    from lib.machine import cpu_model, measure_machine, mfu
    assert mfu(1000.0, 2e6, 4.0) == pytest.approx(0.5)  # 2 GFLOP/s of a 4 GFLOP/s peak
    assert mfu(None, 2e6, 4.0) is None and mfu(1000.0, 2e6, None) is None
    kind = next(k for k, ok in cllm.peak_kinds().items() if ok)
    m = measure_machine([1], kinds=[kind], seconds=0.02)
    assert m.model == cpu_model() and set(m.peaks) == {(kind, 1)} and m.peak(kind, 1) > 0
    assert measure_machine([1], kinds=[], seconds=0.02).peaks == {}
    assert any(line.startswith(f"| {kind} (") for line in m.header_lines())


def test_serve_load_table() -> None:
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    out = run_script("serve_load.py", "--model", "tiny", "--clients", "1,2", "--requests", "5", "--tokens", "4",
                     "--threads", "1")
    for nc, n in (("1", "5"), ("2", "10")):
        r = row(out, nc, n)
        assert r[2] == "0" and r[4] == str(int(n) // 5), r        # no failures; every fifth request left early
        assert r[5].endswith(" ms") and r[7].endswith(" ms"), r
    assert "failures other than deliberate 503s: 0" in out and "server RSS:" in out


def test_prompt_rate_table() -> None:
    out = run_script("prompt_rate.py", "--model", "tiny", "--dtypes", "fp32,int8", "--threads", "1", "--reps", "1",
                     "--prompt-tokens", "32", "--long-tokens", "64")
    for dtype in ("fp32", "int8"):
        r = row(out, dtype, "1")
        assert number(r[2]) > 0 and number(r[4]) > 0 and r[7].endswith(" ms") and r[8].endswith(" ms"), r
    assert "FMA peak measured in this run" in out


def test_eval_rate_table() -> None:
    out = run_script("eval_rate.py", "--max-bytes", "8000", "--reps", "1", "--threads", "1")
    r = row(out, "1")
    assert number(r[2]) > 0 and number(r[3]) > 0 and r[5] == r[6], r        # same loss both ways


def test_typing_cache_table() -> None:
    out = run_script("typing_cache.py", "--model", "tiny", "--threads", "1", "--keys", "6")
    for window in ("whole file, cut to the context", "30 lines before, 10 after"):
        spm, psm = row(out, "1", window, "SPM"), row(out, "1", window, "PSM")
        assert number(spm[4]) < number(psm[4]), (spm, psm)   # SPM reruns fewer tokens per keystroke
        assert spm[5].endswith(" ms") and psm[6].endswith(" ms")


def test_llamacpp_table() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the bench extra builds it)")
    out = run_script("llamacpp.py", "--models", "tiny", "--threads", "1", "--reps", "1", "--prompt-tokens", "32",
                     "--gen-tokens", "8", "--peak-seconds", "0.05")
    for side in ("cllm-fp32", "cllm-int8", "llama-f32", "llama-q8_0"):
        r = row(out, "TINY", "1", side)
        assert number(r[3]) > 0 and r[4].endswith("%") and number(r[5]) > 0 and number(r[8]) > 0, r
    assert "fma_avx" in out and "CPU:" in out
