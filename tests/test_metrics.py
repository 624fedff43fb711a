"""metrics.jsonl writing/reading, loss plots and the non-terminal progress output."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from cllm.training import plot as P
from cllm.training.metrics import METRICS_FILE, MetricsLog, read_metrics, split_rows
from cllm.progress import LineProgress, fmt_count, fmt_duration, progress_bar


def _fake_run(d, steps=20, every=5, resume_from=None):
    with MetricsLog(str(d), resume_step=resume_from) as m:
        for s in range((resume_from or 0) + 1, steps + 1):
            m.log(s, tokens=s * 64, loss=5.0 / s ** 0.3, lr=1e-3, grad_norm=1.5, tokens_per_s=1e4,
                  elapsed_s=s * 0.1)
            if s % every == 0:
                m.log(s, tokens=s * 64, val_loss=5.2 / s ** 0.3, val_bits_per_byte=2.0, elapsed_s=s * 0.1)
    return str(d)


def test_rows_and_resume_without_duplicates(tmp_path):
    d = _fake_run(tmp_path / "r", steps=12)
    rows = read_metrics(d)
    tr, ev = split_rows(rows)
    assert [r["step"] for r in tr] == list(range(1, 13))
    assert [r["step"] for r in ev] == [5, 10]
    assert set(tr[0]) == {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"}
    assert set(ev[0]) == {"step", "tokens", "val_loss", "val_bits_per_byte", "elapsed_s"}
    # the checkpoint was at step 8; steps 9..12 were logged after it, then the run died
    _fake_run(tmp_path / "r", steps=15, resume_from=8)
    tr, ev = split_rows(read_metrics(d))
    assert [r["step"] for r in tr] == list(range(1, 16))
    assert [r["step"] for r in ev] == [5, 10, 15]
    # elapsed time continues from the kept rows (0.8 s at step 8)
    assert tr[8]["elapsed_s"] == pytest.approx(0.8 + 0.9)
    # a new run (no resume) in the same directory starts a new log
    _fake_run(tmp_path / "r", steps=3)
    assert [r["step"] for r in read_metrics(d)] == [1, 2, 3]


def test_values_are_clean_json(tmp_path):
    import numpy as np
    with MetricsLog(str(tmp_path)) as m:
        m.log(1, loss=np.float32(2.123456789), grad_norm=float("nan"), lr=3e-4)
    line = open(tmp_path / METRICS_FILE).read()
    row = json.loads(line)
    assert row == {"step": 1, "loss": 2.123457, "grad_norm": None, "lr": 0.0003}
    assert "NaN" not in line


def test_torn_and_bad_lines(tmp_path):
    p = tmp_path / METRICS_FILE
    p.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert [r["step"] for r in read_metrics(str(p))] == [1]
    p.write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: malformed"):
        read_metrics(str(p))
    with pytest.raises(FileNotFoundError, match="no metrics log"):
        read_metrics(str(tmp_path / "nope"))


def test_no_out_dir_keeps_nothing():
    with MetricsLog(None) as m:
        m.log(1, loss=1.0)
    assert m.path is None


def test_plot_several_runs(tmp_path):
    pytest.importorskip("matplotlib")
    a = _fake_run(tmp_path / "a")
    b = _fake_run(tmp_path / "b", steps=30, every=10)
    out = P.plot_runs([a, os.path.join(b, METRICS_FILE)], str(tmp_path / "img" / "loss.png"))
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2 labels for 1 runs"):
        P.plot_runs([a], str(tmp_path / "x.png"), labels=["x", "y"])


def test_cli_plot(tmp_path):
    pytest.importorskip("matplotlib")
    a = _fake_run(tmp_path / "a")
    r = subprocess.run([sys.executable, "-m", "cllm", "plot", a], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(a, "loss.png"))
    r = subprocess.run([sys.executable, "-m", "cllm", "plot", str(tmp_path / "missing")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no metrics log" in r.stderr and "Traceback" not in r.stderr


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path):
    a = _fake_run(tmp_path / "a")
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from cllm.cli.main import main; sys.exit(main(['plot', %r]))" % a)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert 'pip install "cllm[plot]"' in r.stderr and "Traceback" not in r.stderr


def test_line_progress_prints_lines_not_carriage_returns():
    buf = io.StringIO()
    bar = LineProgress(desc="train", total=10, unit="step", interval=0, file=buf)
    for i in range(10):
        bar.update(1)
        bar.set_postfix(loss=f"{3 - i / 10:.3f}")
    bar.close()
    bar.close()
    out = buf.getvalue()
    assert "\r" not in out
    lines = out.strip().split("\n")
    assert len(lines) == 11  # one per update (interval 0) and the final one with the last postfix
    assert lines[-1].startswith("train: 10/10 step (100%) loss=2.100 [")
    assert "ETA" in lines[0] and "ETA" not in lines[-1]
    buf = io.StringIO()
    bar = LineProgress(desc="tok", total=None, unit="B", unit_scale=True, interval=3600, file=buf)
    bar.update(2_500_000)
    assert buf.getvalue() == ""  # throttled until close
    bar.close()
    assert buf.getvalue().startswith("tok: 2.5M B [")


def test_progress_bar_picks_by_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress_bar(True, desc="x", total=3), LineProgress)
    assert not isinstance(progress_bar(False, desc="x", total=3), LineProgress)


def test_formatters():
    assert fmt_duration(5) == "5s" and fmt_duration(185) == "3m05s" and fmt_duration(3720) == "1h02m"
    assert fmt_count(1234567) == "1,234,567" and fmt_count(1234567, True) == "1.2M" and fmt_count(999, True) == "999"
