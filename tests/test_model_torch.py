"""The C model against a PyTorch reference with the same weights: logits,
loss, the gradient of every parameter tensor, and AdamW."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_ref import TorchGPT2  # noqa: E402

import cllm  # noqa: E402
from cllm.config import ModelConfig  # noqa: E402
from cllm.model.gpt import Model  # noqa: E402
from cllm.data.tokenizer import Tokenizer  # noqa: E402

CONFIGS = [
    # ragged: nothing a multiple of 8 or 16
    dict(vocab_size=300, context_len=23, num_layers=2, num_heads=3, embed_dim=21, B=5, T=19, threads=1),
    dict(vocab_size=512, context_len=64, num_layers=3, num_heads=4, embed_dim=64, B=4, T=64, threads=2),
    dict(vocab_size=263, context_len=37, num_layers=1, num_heads=5, embed_dim=35, B=3, T=37, threads=3),
    # fewer sequences than spheres, or sequences that do not divide evenly:
    # the shards are token rows (a boundary inside a sequence) and attention
    # runs by (sequence, head) units over the whole batch
    dict(vocab_size=300, context_len=29, num_layers=2, num_heads=3, embed_dim=21, B=1, T=29, threads=2),
    dict(vocab_size=300, context_len=23, num_layers=2, num_heads=3, embed_dim=21, B=3, T=23, threads=2),
    dict(vocab_size=263, context_len=37, num_layers=1, num_heads=5, embed_dim=35, B=2, T=37, threads=3),
    # token-row shards longer than the GEMM's row block (the layers still run batch-wide)
    dict(vocab_size=263, context_len=600, num_layers=1, num_heads=2, embed_dim=24, B=1, T=600, threads=2),
    # grouped K/V heads: multi-query (one K/V head), two groups, by shards of
    # whole sequences and of token rows
    dict(vocab_size=300, context_len=23, num_layers=2, num_heads=3, embed_dim=21, B=5, T=19, threads=1, kv=1),
    dict(vocab_size=512, context_len=64, num_layers=2, num_heads=4, embed_dim=64, B=4, T=64, threads=2, kv=2),
    dict(vocab_size=300, context_len=29, num_layers=2, num_heads=4, embed_dim=20, B=1, T=29, threads=2, kv=1),
    dict(vocab_size=263, context_len=37, num_layers=1, num_heads=6, embed_dim=42, B=2, T=37, threads=3, kv=2),
]
IDS = ["ragged", "aligned", "ragged-1layer", "rows-1seq", "rows-3seq", "rows-3threads", "rows-long",
       "mqa-ragged", "gqa2-aligned", "mqa-rows-1seq", "gqa2-rows-3threads"]


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def make(cfg: dict, seed: int = 7):
    mc = ModelConfig(cfg["vocab_size"], cfg["context_len"], cfg["num_layers"], cfg["num_heads"], cfg["embed_dim"],
                     n_kv_heads=cfg.get("kv"))
    m = Model(mc, Tokenizer.byte_level(), batch_size=cfg["B"], seq_len=cfg["T"], threads=cfg["threads"], seed=seed)
    # non-trivial LayerNorm parameters and biases, so their gradients are tested too
    r = np.random.default_rng(seed)
    for name, v in m.named_parameters():
        if v.ndim == 1:
            v[...] += r.normal(0, 0.1, v.shape).astype(np.float32)
    ref = TorchGPT2(mc.vocab_size, mc.context_len, mc.num_layers, mc.num_heads, mc.embed_dim, mc.n_kv_heads)
    ref.load_numpy(m.state_dict())
    return m, ref


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_forward_backward_match_torch(cfg, rng):
    torch.set_num_threads(1)
    m, ref = make(cfg)
    x = rng.integers(0, cfg["vocab_size"], (cfg["B"], cfg["T"]))
    y = rng.integers(0, cfg["vocab_size"], (cfg["B"], cfg["T"]))
    y[0, :3] = -1  # ignored targets
    loss = m.forward(x, y)
    m.backward()
    lg, tl = ref(torch.from_numpy(x).long(), torch.from_numpy(y).long(), attn="math")
    tl.backward()
    assert abs(loss - tl.item()) / tl.item() < 1e-4
    assert rel(m.logits(x), lg.detach().numpy()) < 1e-4
    named = ref.named()
    checked = 0
    for name, g in m.named_grads():
        tg = named[name].grad.numpy()
        assert np.abs(tg).max() > 0, name
        assert rel(g, tg) < 1e-4, f"{name}: rel err {rel(g, tg):.2e}"
        checked += 1
    assert checked == 4 + 12 * cfg["num_layers"]


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_gradients_match_under_every_isa(isa, rng):
    info = cllm.cpu_info()
    if (isa == "avx2" and not info["avx2_fma"]) or (isa == "avx512" and not info["avx512"]):
        pytest.skip(f"CPU lacks {isa}")
    before = cllm.get_isa()
    cllm.set_isa(isa)
    try:
        test_forward_backward_match_torch(CONFIGS[0], rng)
    finally:
        cllm.set_isa(before)


def test_adamw_step_matches_torch(rng):
    torch.set_num_threads(1)
    cfg = CONFIGS[0]
    m, ref = make(cfg)
    hp = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    wd = 0.1
    opt = torch.optim.AdamW(ref.param_groups(wd), **hp)
    for step in (1, 2, 3):
        x = rng.integers(0, cfg["vocab_size"], (cfg["B"], cfg["T"]))
        y = rng.integers(0, cfg["vocab_size"], (cfg["B"], cfg["T"]))
        # clip at a value the norm exceeds, so clipping is exercised
        loss, gn = m.train_step(x, y, step, hp["lr"], beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=wd,
                                grad_clip=0.2)
        opt.zero_grad()
        _, tl = ref(torch.from_numpy(x).long(), torch.from_numpy(y).long(), attn="math")
        tl.backward()
        tn = torch.nn.utils.clip_grad_norm_(list(ref.named().values()), 0.2)
        opt.step()
        assert abs(loss - tl.item()) / tl.item() < 1e-4
        assert abs(gn - tn.item()) / tn.item() < 1e-4
        assert gn > 0.2
    named = ref.named()
    for name, v in m.named_parameters():
        assert rel(v, named[name].detach().numpy()) < 1e-4, name
    # moments too
    st = opt.state
    for t in m.tensor_info():
        p = named[t["name"]]
        a, n = t["offset"], t["numel"]
        assert rel(m.adam_m[a:a + n].reshape(t["shape"]), st[p]["exp_avg"].numpy()) < 1e-4
        assert rel(m.adam_v[a:a + n].reshape(t["shape"]), st[p]["exp_avg_sq"].numpy()) < 1e-3


def test_weight_decay_applies_only_to_matmul_weights():
    m, _ = make(CONFIGS[0])
    decayed = {t["name"] for t in m.tensor_info() if t["decay"]}
    assert decayed and all(n.endswith(".weight") and (".attn." in n or ".mlp." in n) for n in decayed)
    assert "transformer.wte.weight" not in decayed and "transformer.wpe.weight" not in decayed


def test_init_is_gpt2_and_seeded():
    mc = ModelConfig(vocab_size=2000, context_len=64, num_layers=4, num_heads=4, embed_dim=128)
    a = Model(mc, Tokenizer.byte_level(), batch_size=1, seq_len=8, threads=1, seed=5)
    b = Model(mc, Tokenizer.byte_level(), batch_size=1, seq_len=8, threads=1, seed=5)
    c = Model(mc, Tokenizer.byte_level(), batch_size=1, seq_len=8, threads=1, seed=6)
    assert np.array_equal(a.params, b.params) and not np.array_equal(a.params, c.params)
    sd = a.state_dict()
    assert abs(sd["transformer.wte.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.attn.c_attn.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.mlp.c_proj.weight"].std() - 0.02 / np.sqrt(8)) < 0.001
    assert np.all(sd["transformer.h.0.ln_1.weight"] == 1) and np.all(sd["transformer.h.0.ln_1.bias"] == 0)
    assert np.all(sd["transformer.h.0.attn.c_attn.bias"] == 0)
