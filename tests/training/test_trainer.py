"""The training engine end to end on a tiny captioner: exact resume, two processes, stages, cache."""

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sca.training.run import run_training


def _final_weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _assert_same(a, b, atol=0.0):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_training_runs_logs_and_saves(synthetic_root, tiny_run_config, tmp_path):
    cfg = tiny_run_config(synthetic_root)
    result = run_training(**cfg, output_dir=tmp_path / "run", progress=False)
    assert result.steps == 6 and len(result.history) == 6
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    metrics = json.loads((tmp_path / "run" / "live" / "metrics.json").read_text())
    assert metrics["step"] == 6 and "loss" in metrics["train"]
    assert (tmp_path / "run" / "live" / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    assert result.data_report is not None and result.data_report.count() == 0


def test_interrupted_run_resumes_to_identical_weights(synthetic_root, tiny_run_config, tmp_path):
    """In-process: stop after 4 of 6 steps, resume; compare with a run that never stopped."""
    cfg = tiny_run_config(synthetic_root, max_steps=6, save_every=2)
    run_training(**cfg, output_dir=tmp_path / "full", progress=False)
    short = tiny_run_config(synthetic_root, max_steps=6, save_every=2)
    # Same schedule (max_steps 6), stopped by hand after step 4's checkpoint.
    from sca.training import trainer as trainer_module

    original = trainer_module.Trainer._save
    calls = {"n": 0}

    def save_then_die(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    trainer_module.Trainer._save = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(**short, output_dir=tmp_path / "resumed", progress=False)
    finally:
        trainer_module.Trainer._save = original
    assert (tmp_path / "resumed" / "checkpoints" / "step-00000004").is_dir()
    assert not (tmp_path / "resumed" / "model").exists()
    run_training(**short, output_dir=tmp_path / "resumed", progress=False)
    _assert_same(_final_weights(tmp_path / "full"), _final_weights(tmp_path / "resumed"))


def test_killed_process_resumes_to_identical_weights(synthetic_root, tiny_run_config, tmp_path, write_config):
    """A real SIGKILL at an arbitrary moment after the first checkpoint; the same command resumes."""
    config = write_config(tiny_run_config(synthetic_root, max_steps=8, save_every=1))
    cmd = [sys.executable, "-m", "sca.cli", "train", "--config", str(config)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([*cmd, "--output", str(tmp_path / "full")], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cmd, "--output", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpts = tmp_path / "killed" / "checkpoints"
    while time.time() < deadline and not (ckpts / "step-00000003").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model").exists(), "the run finished before it could be killed"
    subprocess.run([*cmd, "--output", str(tmp_path / "killed")], check=True, env=env, capture_output=True)
    _assert_same(_final_weights(tmp_path / "full"), _final_weights(tmp_path / "killed"))
    assert json.loads((tmp_path / "killed" / "live" / "metrics.json").read_text())["step"] == 8


def test_weak_pretraining_weights_start_finetuning(synthetic_root, tiny_run_config, tmp_path):
    pre = run_training(**tiny_run_config(synthetic_root, max_steps=2, save_every=0), output_dir=tmp_path / "pre",
                       progress=False)
    assert pre.steps == 2
    cfg = tiny_run_config(synthetic_root, max_steps=1, lr=1e-12, warmup_steps=0,
                          init_from=str(tmp_path / "pre" / "model"))
    run_training(**cfg, output_dir=tmp_path / "ft", progress=False)
    a, b = _final_weights(tmp_path / "pre"), _final_weights(tmp_path / "ft")
    _assert_same(a, b, atol=1e-6)  # started from the pretrained mixer (and barely moved)
    with pytest.raises(FileNotFoundError, match="init_from"):
        run_training(**tiny_run_config(synthetic_root, init_from=str(tmp_path / "nothing")),
                     output_dir=tmp_path / "bad", progress=False)


def test_embedding_cache_gives_the_same_training_and_is_reused(synthetic_root, tiny_run_config, tmp_path):
    base = tiny_run_config(synthetic_root, max_steps=4, save_every=0)
    base["data"].update(jitter=False, hflip=0.0)
    run_training(**base, output_dir=tmp_path / "plain", progress=False)
    cached = json.loads(json.dumps(base))
    cached["train"]["use_embedding_cache"] = True
    cache_dir = tmp_path / "cache"
    run_training(**cached, output_dir=tmp_path / "cached", cache_dir=str(cache_dir), progress=False)
    _assert_same(_final_weights(tmp_path / "plain"), _final_weights(tmp_path / "cached"), atol=1e-6)
    entries = list(cache_dir.glob("*/*/*.safetensors"))
    assert len(entries) == 16  # 4 steps x 4 images = the 16 training images, once each
    augmented = json.loads(json.dumps(cached))
    augmented["data"]["hflip"] = 0.5
    with pytest.raises(ValueError, match="without image augmentation"):
        run_training(**augmented, output_dir=tmp_path / "aug", progress=False)


def test_embedding_cache_invalidates_when_the_encoder_changes(tmp_path):
    from sca.models import load_registries
    from sca.training.cache import EmbeddingCache

    encoders, _ = load_registries()
    torch.manual_seed(0)
    seg = encoders.build("tiny-sam")
    pixels = torch.randn(2, 3, 64, 64)
    a = EmbeddingCache(tmp_path, seg, {"name": "tiny-sam"}, {"image_size": 64})
    first = a.features(["x", "y"], pixels)
    again = EmbeddingCache(tmp_path, seg, {"name": "tiny-sam"}, {"image_size": 64}).features(["x", "y"], None)
    torch.testing.assert_close(first["image_embeddings"], again["image_embeddings"])
    with torch.no_grad():
        seg.sam.vision_encoder.neck.conv1.weight.add_(0.1)
    changed = EmbeddingCache(tmp_path, seg, {"name": "tiny-sam"}, {"image_size": 64})
    assert changed.dir != a.dir
    with pytest.raises(ValueError, match="not cached"):
        changed.features(["x"], None)
    other_context = EmbeddingCache(tmp_path, seg, {"name": "tiny-sam"}, {"image_size": 128})
    assert other_context.dir != changed.dir


def test_a_bad_image_is_reported_not_fatal(synthetic_root, tiny_run_config, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    victim = sorted((root / "images" / "train").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated file
    cfg = tiny_run_config(root, max_steps=4, save_every=0)
    result = run_training(**cfg, output_dir=tmp_path / "run", progress=False)
    assert result.steps == 4
    assert result.data_report.count() >= 1
    assert any(victim.stem in str(i) or "image" in i.kind for i in result.data_report.issues())


@pytest.mark.slow
def test_two_processes_match_one_process(synthetic_root, tiny_run_config, tmp_path, write_config):
    """accelerate launch, 2 CPU processes (gloo), same global batch: same weights within 1e-5."""
    config = write_config(tiny_run_config(synthetic_root, max_steps=4, save_every=0))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "sca.cli", "train", "--config", str(config)]
    subprocess.run([*base, "--output", str(tmp_path / "one")], check=True, env=env, capture_output=True)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "sca.cli", "train", "--config", str(config), "--output", str(tmp_path / "two")]
    out = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_same(_final_weights(tmp_path / "one"), _final_weights(tmp_path / "two"), atol=1e-5)


def test_checkpoints_of_another_configuration_are_not_resumed(synthetic_root, tiny_run_config, tmp_path, capsys):
    cfg = tiny_run_config(synthetic_root, max_steps=2, save_every=1)
    run_training(**cfg, output_dir=tmp_path / "run", progress=False)
    changed = tiny_run_config(synthetic_root, max_steps=2, save_every=1, lr=5e-4)
    run_training(**changed, output_dir=tmp_path / "run", progress=False)
    assert "checkpoints of another configuration: starting over" in capsys.readouterr().out
    run_training(**changed, output_dir=tmp_path / "fresh", progress=False)
    _assert_same(_final_weights(tmp_path / "run"), _final_weights(tmp_path / "fresh"))


def test_code_version_is_part_of_the_fingerprint(monkeypatch):
    """Checkpoints of other code are not resumed (a DVC stage rerun after a code change retrains)."""
    from sca.training import trainer as tr

    version = tr.code_version()
    assert len(version) == 16 and int(version, 16) >= 0
    a = tr._fingerprint({"x": 1})
    monkeypatch.setattr(tr, "code_version", lambda: "other-code")
    assert tr._fingerprint({"x": 1}) != a


def test_a_finished_run_started_again_keeps_its_final_loss(synthetic_root, tiny_run_config, tmp_path):
    cfg = tiny_run_config(synthetic_root)
    first = run_training(**cfg, output_dir=tmp_path / "run", progress=False)
    again = run_training(**cfg, output_dir=tmp_path / "run", progress=False)
    assert again.steps == first.steps and again.history == []
    assert again.final_loss == first.final_loss


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_algorithms_during_training_only(synthetic_root, tiny_run_config, tmp_path, monkeypatch,
                                                       deterministic):
    from sca.training import trainer as trainer_module

    seen = []
    original = trainer_module.Trainer._fit

    def recording_fit(self, *args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "_fit", recording_fit)
    assert not torch.are_deterministic_algorithms_enabled()
    cfg = tiny_run_config(synthetic_root, max_steps=2, deterministic=deterministic)
    run_training(**cfg, output_dir=tmp_path / "run", progress=False)
    assert seen == [(True, True)] if deterministic else seen == [(False, False)]
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run


DEEPSPEED_ZERO2 = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "deepspeed_zero2.yaml"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (pip install deepspeed)")
@pytest.mark.parametrize("precision", ["no", "bf16"])  # DeepSpeed's fp16 does not run on a CPU
def test_deepspeed_zero2_matches_plain_training_and_resumes_exactly(synthetic_root, tiny_run_config, tmp_path,
                                                                     write_config, precision):
    """The repository's ZeRO-2 accelerate config (engine, ZeRO optimizer, its partitions in the
    checkpoints) gives the weights of a plain run; a run cut after step 2 resumes from its ZeRO
    partitions to the same weights. One process: without GPUs accelerate gives a DeepSpeed launch no
    process group (each process would see num_processes 1; the trainer refuses that launch)."""
    config = write_config(tiny_run_config(synthetic_root, max_steps=4, save_every=2, mixed_precision=precision))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if precision == "no":
        subprocess.run([sys.executable, "-m", "sca.cli", "train", "--config", str(config), "--output",
                        str(tmp_path / "one")], check=True, env=env, capture_output=True)

    def launch(out):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DEEPSPEED_ZERO2),
               "--num_processes", "1", "--mixed_precision", precision,
               "-m", "sca.cli", "train", "--config", str(config), "--output", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    launch(tmp_path / "zero")
    first = tmp_path / "zero" / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in (first / "zero").iterdir()) == ["rank-0.pt"]
    assert not (first / "optimizer.pt").exists()
    final = _final_weights(tmp_path / "zero")
    assert all(v.dtype == torch.float32 for v in final.values())
    if precision == "no":
        _assert_same(_final_weights(tmp_path / "one"), final, atol=1e-5)
    else:  # the fp32 masters are kept, not the bf16 copies DeepSpeed computes with
        assert any(bool((v != v.bfloat16().float()).any()) for v in final.values())
    # Cut the run after step 2: resume from its ZeRO partitions.
    shutil.copytree(tmp_path / "zero", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-00000004")
    shutil.rmtree(tmp_path / "cut" / "model")
    (tmp_path / "cut" / "checkpoints" / "latest").write_text("step-00000002\n")
    resumed = launch(tmp_path / "cut")
    assert "resuming from" in resumed.stdout + resumed.stderr
    _assert_same(_final_weights(tmp_path / "zero"), _final_weights(tmp_path / "cut"), atol=1e-7)
    # A ZeRO checkpoint is not resumed by a plain launch (its optimizer state is in the partitions).
    shutil.rmtree(tmp_path / "cut" / "model")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-00000004")
    (tmp_path / "cut" / "checkpoints" / "latest").write_text("step-00000002\n")
    plain = subprocess.run([sys.executable, "-m", "sca.cli", "train", "--config", str(config), "--output",
                            str(tmp_path / "cut")], env=env, capture_output=True, text=True)
    assert plain.returncode != 0 and "was written under DeepSpeed ZeRO" in plain.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on a GPU")
def test_fp16_on_a_cpu_is_refused_not_run_in_float32(synthetic_root, tiny_run_config, tmp_path,
                                                      fresh_accelerate_state):
    cfg = tiny_run_config(synthetic_root, max_steps=1, mixed_precision="fp16")
    with pytest.raises(ValueError, match="mixed_precision 'fp16' needs a GPU .*use 'bf16' or 'no'"):
        run_training(**cfg, output_dir=tmp_path / "run", progress=False)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one mixed-precision setting per process: start and leave with none."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_autocast_trains_on_a_cpu(synthetic_root, tiny_run_config, tmp_path, fresh_accelerate_state):
    from accelerate.state import AcceleratorState

    plain = run_training(**tiny_run_config(synthetic_root, max_steps=2, save_every=0), output_dir=tmp_path / "plain",
                         progress=False)
    AcceleratorState._reset_state(reset_partial_state=True)
    cfg = tiny_run_config(synthetic_root, max_steps=2, save_every=0, mixed_precision="bf16")
    result = run_training(**cfg, output_dir=tmp_path / "run", progress=False)
    assert result.steps == 2 and math.isfinite(result.final_loss)
    assert result.final_loss != plain.final_loss  # autocast ran: bf16 matmuls round differently
    assert all(v.dtype == torch.float32 for v in _final_weights(tmp_path / "run").values())
