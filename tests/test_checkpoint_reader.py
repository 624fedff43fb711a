"""One checkpoint reader: every loader (``cllm.load`` with and without a
dtype, ``Model.load``, ``InferenceModel.load``, ``--init-from``, ``--resume``,
``cllm info``, ``quantize``) opens a checkpoint through
:func:`cllm.model.checkpoint.open_checkpoint` and so applies the same checks."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cllm
from cllm.config import ModelConfig
from cllm.data.tokenizer import Tokenizer
from cllm.model import checkpoint as ck
from cllm.model.gpt import Model


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    d = str(tmp_path_factory.mktemp("ckpt") / "m")
    m = Model.create(ModelConfig(300, 32, 1, 2, 16), Tokenizer.byte_level(), threads=1, seed=5)
    m.save(d, trainer_state={"step": 3, "run_id": "r"})
    return d


def _copy(saved: str, tmp_path) -> str:
    dst = str(tmp_path / "copy")
    shutil.copytree(saved, dst, symlinks=True)
    return dst


LOADERS = {
    "load": lambda d: cllm.load(d, threads=1),
    "load-fp32": lambda d: cllm.load(d, dtype="fp32", threads=1),
    "load-int8": lambda d: cllm.load(d, dtype="int8", threads=1),
    "Model.load": lambda d: Model.load(d, threads=1),
    "InferenceModel.load": lambda d: cllm.InferenceModel.load(d, dtype="bf16", threads=1),
    "quantize": lambda d: cllm.quantize(d, d + "-q", dtype="int8"),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_every_loader_verifies_the_manifest(saved, tmp_path, loader):
    d = _copy(saved, tmp_path)
    f = os.path.join(d, "latest", "model.safetensors")
    data = bytearray(open(f, "rb").read())
    data[-1] ^= 0x01                       # same size, one bit off: only the hash sees it
    open(f, "wb").write(bytes(data))
    with pytest.raises(cllm.CheckpointError, match="SHA-256"):
        LOADERS[loader](d)


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_every_loader_checks_the_config_the_same_way(saved, tmp_path, loader):
    d = _copy(saved, tmp_path)
    # a plain HF directory (no manifest) with a GPT-2 variant cllm does not run
    os.unlink(os.path.join(d, "latest", ck.MANIFEST_FILE))
    cfg_path = os.path.join(d, "latest", "config.json")
    cfg = json.load(open(cfg_path))
    cfg["layer_norm_epsilon"] = 1e-6
    os.unlink(cfg_path)
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(cllm.CheckpointError, match="layer_norm_epsilon"):
        LOADERS[loader](d)


def test_open_checkpoint_follows_latest_and_reports_the_parts(saved):
    c = ck.open_checkpoint(saved)
    assert os.path.basename(c.path).startswith("checkpoint-3")
    assert c.manifest["step"] == 3 and c.quantization is None and c.has_state()
    assert c.config.vocab_size == 300 and len(c.tokenizer) == 257
    assert ck.open_checkpoint(c) is c          # an opened checkpoint passes through


def test_a_real_directory_copy_loads(saved, tmp_path):
    d = str(tmp_path / "real")
    shutil.copytree(saved, d)                  # symlinks followed (an archive, a hub upload)
    a = Model.load(saved, threads=1)
    b = Model.load(d, threads=1)
    assert np.array_equal(a.params, b.params)


def test_a_quantized_checkpoint_is_refused_by_the_trainable_loader(saved, tmp_path):
    q = cllm.quantize(saved, str(tmp_path / "q"), dtype="int8")
    assert ck.open_checkpoint(q).quantization == "int8"
    assert isinstance(cllm.load(q, threads=1), cllm.InferenceModel)
    with pytest.raises(cllm.CheckpointError, match="quantized"):
        Model.load(q, threads=1)


def test_init_from_and_info_use_the_same_checks(saved, tmp_path, code_corpus):
    d = _copy(saved, tmp_path)
    f = os.path.join(d, "latest", "tokenizer.json")
    os.unlink(f)
    with pytest.raises(cllm.CheckpointError, match="tokenizer.json"):
        cllm.train(code_corpus, init_from=d, max_steps=1, out_dir=str(tmp_path / "o"), progress=False,
                   batch_size=1, seq_len=16)
    r = subprocess.run([sys.executable, "-m", "cllm", "info", d], capture_output=True, text=True)
    assert r.returncode != 0 and "tokenizer.json" in r.stderr and "Traceback" not in r.stderr
