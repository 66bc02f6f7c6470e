"""The spikingjelly baseline: its one-line refusal when spikingjelly is absent (whether or not it
is installed here), and, where it is installed, its Qwen2 recipe on tiny Qwen2."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.spiking import baseline

REPO = Path(__file__).resolve().parents[2]


def hide_spikingjelly(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if it were not installed: a None entry in sys.modules makes its import fail, for the
    package and for any submodule an earlier test may have imported."""
    loaded = [n for n in sys.modules if n.startswith("spikingjelly.")]
    for name in ["spikingjelly", "spikingjelly.activation_based.ann2snn", *loaded]:
        monkeypatch.setitem(sys.modules, name, None)


def test_absent_spikingjelly_is_refused_in_one_line_with_the_fix(monkeypatch):
    hide_spikingjelly(monkeypatch)
    with pytest.raises(UserInputError) as refusal:
        baseline.require_spikingjelly()
    message = str(refusal.value)
    assert "\n" not in message
    assert "spikingjelly 2.0.0" in message and baseline.INSTALL in message
    assert "--no-deps" in baseline.INSTALL


def test_another_spikingjelly_version_is_refused(monkeypatch):
    monkeypatch.setattr(baseline.importlib, "import_module", lambda name: None)
    monkeypatch.setattr(baseline.importlib.metadata, "version", lambda name: "0.0.0.0.15")
    with pytest.raises(UserInputError, match="0.0.0.0.15 is installed"):
        baseline.require_spikingjelly()


def test_the_benchmark_exits_2_with_one_line_when_spikingjelly_is_absent(tmp_path):
    """A package that fails on import, first on the path, stands in for the missing one."""
    fake = tmp_path / "spikingjelly"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'spikingjelly'\", name='spikingjelly')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/spiking_baseline.py"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and baseline.INSTALL in lines[0], done.stderr
    assert done.stdout == ""


def test_windows_never_hold_fewer_tokens_than_asked():
    ids = torch.arange(10)
    assert [w.tolist() for w in baseline.token_windows(ids, count=2, length=5)] == [
        [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    with pytest.raises(UserInputError, match="fewer than 3 windows of 4"):
        baseline.token_windows(ids, count=3, length=4)


def test_qwen2_recipe_on_tiny_qwen2():
    pytest.importorskip("spikingjelly.activation_based.ann2snn")
    from spikingjelly.activation_based.ann2snn import Qwen2SNNConfig, calibrate_qwen2_snn

    from mfmaccel.models import load_model

    model = load_model("tiny-qwen2")
    windows = [torch.arange(3, 19), torch.arange(40, 56)]
    bounds = baseline.calibration_bounds(model.module, windows)
    batches = [{"input_ids": w.unsqueeze(0), "attention_mask": torch.ones(1, 16, dtype=torch.long)}
               for w in windows]
    direct = calibrate_qwen2_snn(model.module, batches, Qwen2SNNConfig(time_steps=4,
                                                                       calibration_levels=4))
    rescaled = baseline.at_steps(bounds, 4)  # one calibration pass serves every T, exactly
    assert torch.equal(rescaled.input_scale, direct.input_scale)
    for ours, theirs in zip(rescaled.layer_scales, direct.layer_scales, strict=True):
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs)
    assert rescaled.state_dict().keys() == direct.state_dict().keys()

    record = baseline.qwen2_baseline(model, steps=[2, 8], windows=2, window_tokens=12,
                                     calibration_windows=2)
    assert record.scored_tokens == 22 and record.calibration_tokens == 24
    assert [r.time_steps for r in record.at_steps] == [2, 8]
    for result in record.at_steps:
        assert math.isfinite(result.perplexity) and result.spikes > 0
        assert 0 < result.spikes_per_value <= result.time_steps
        assert set(result.spikes_per_value_by_kind) == set(baseline.ENCODER_KINDS)
    assert record.structure["signed_if_encoder_count"] == 1 + 4 * 2  # input, 4 per layer
    # more steps, finer steps: the spike sums come closer to the float activations
    assert record.at_steps[1].encoding_relative_l2 < record.at_steps[0].encoding_relative_l2


def test_qwen2_recipe_refuses_other_models():
    pytest.importorskip("spikingjelly.activation_based.ann2snn")
    from mfmaccel.models import load_model

    with pytest.raises(UserInputError, match="takes a Qwen2 model"):
        baseline.qwen2_baseline(load_model("tiny-llama"), steps=[2], windows=1, window_tokens=8,
                                calibration_windows=1)
