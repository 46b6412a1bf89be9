"""Training: the embedded default learns, resume continues the exact schedule, DDP on CPU, errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgca.checkpoint import CheckpointError, load_checkpoint
from mgca.config import ConfigError, load_config
from mgca.schedule import warmup_cosine
from mgca.train import (
    LOSS_TERMS,
    NORM_TERMS,
    Trainer,
    accumulation_steps,
    embedded_config_path,
    epoch_batches,
    main,
    train,
)

from .grad_check import GLOBAL_BATCH, decoder_gradients, fixed_batch, make_trainer
from .support import DECODER_ONLY, FAST, REPO, fast_config, one_line_error, one_line_exit_2, subprocess_env, train_args


def test_warmup_then_cosine_to_zero():
    values = [warmup_cosine(step, 4, 20) for step in range(20)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(values[3:], values[4:], strict=False))
    assert values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert warmup_cosine(20, 4, 20) == pytest.approx(0.0)


def test_accumulation_steps():
    assert accumulation_steps(0, 32, 2) == 1
    assert accumulation_steps(1024, 128, 2) == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        accumulation_steps(1000, 128, 2)


def _fixed_batch_loss(trainer: Trainer, batch: dict) -> float:
    with torch.no_grad():
        text = trainer.model.encode_captions(batch["captions"])
        pixels = trainer.model(batch["images"]).flatten(2).transpose(1, 2)
        return float(trainer.loss_fn(pixels, text)["loss"])


def test_embedded_default_loss_falls(tmp_path):
    """The embedded default config learns: the loss on a fixed batch drops after a short run."""
    cfg = load_config(embedded_config_path(),
                      [*DECODER_ONLY, "backbone.arch=mgca-tiny", "data.image_size=224", "data.synthetic_size=96",
                       "train.batch_size=16", "optim.epochs=5",
                                               f"train.output_dir={tmp_path}"])
    trainer = Trainer(cfg)
    batch = next(epoch_batches(cfg, trainer.transform, trainer.info, epoch=0, start_batch=0)[0])
    before = _fixed_batch_loss(trainer, batch)
    result = trainer.fit()
    after = _fixed_batch_loss(trainer, batch)
    print(f"fixed-batch loss {before:.4f} -> {after:.4f}")
    assert len(result.history) == 5 * (96 // 16)
    assert after < 0.97 * before  # deterministic batch: an untrained or broken step leaves it unchanged
    assert result.loss_curve.is_file() and result.loss_curve.read_bytes()[:4] == b"\x89PNG"
    payload = load_checkpoint(result.checkpoint)
    assert all(key.startswith("blocks.") for key in payload["decoder"])  # decoder only, no CLIP weights
    assert payload["backbone"]["arch"] == "mgca-tiny" and len(payload["backbone"]["visual_sha256"]) == 64


def test_gradient_accumulation_steps_once_per_global_batch(tmp_path):
    """global_batch=16 from micro-batches of 8: one optimizer step (and one schedule step) per 2 batches."""
    result = train(fast_config(tmp_path, "train.global_batch=16", "train.max_steps=2"))
    assert [h["step"] for h in result.history] == [1, 2]
    payload = load_checkpoint(result.checkpoint)
    assert payload["train_state"]["batch_in_epoch"] == 4


def test_resume_continues_exact_schedule(tmp_path):
    straight = train(fast_config(tmp_path / "straight", "train.max_steps=8"))
    train(fast_config(tmp_path / "split", "train.max_steps=5"))  # 6 steps per epoch: stops mid-epoch 0
    resumed = train(fast_config(tmp_path / "split", "train.max_steps=8", "train.resume=auto"))
    assert [h["step"] for h in resumed.history] == list(range(1, 9))
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a, b)
    final_a = load_checkpoint(straight.checkpoint)["decoder"]
    final_b = load_checkpoint(resumed.checkpoint)["decoder"]
    for key in final_a:
        torch.testing.assert_close(final_a[key], final_b[key], rtol=1e-5, atol=1e-6)


def test_resume_refuses_changed_loss_config(tmp_path):
    train(fast_config(tmp_path, "train.max_steps=1"))
    with pytest.raises(ConfigError, match="recipe differs from this run.s in loss.k_pix"):
        Trainer(fast_config(tmp_path, "train.resume=auto", "loss.k_pix=0.5"))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A crash while saving leaves the previous checkpoint intact and no temporary file behind."""
    result = train(fast_config(tmp_path, "train.max_steps=1"))
    before = result.checkpoint.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", explode)
    trainer = Trainer(fast_config(tmp_path, "train.resume=auto"))
    with pytest.raises(CheckpointError, match=r"\(disk full\): the earlier last.pt is unchanged; free some space"):
        trainer.save()  # one line (issue 30, item 5), no raw OSError
    assert result.checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_checkpoint_write_failed_inside_torch_is_one_line(tmp_path, monkeypatch):
    """A full disk seen by torch's own zip writer is a RuntimeError, not an OSError: the same one line."""
    result = train(fast_config(tmp_path, "train.max_steps=1"))
    before = result.checkpoint.read_bytes()

    def full(*args, **kwargs):  # torch's message on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    trainer = Trainer(fast_config(tmp_path, "train.resume=auto"))
    with pytest.raises(CheckpointError, match=r"\(the write failed: is the disk full\?\): the earlier last.pt is "
                                              "unchanged") as info:
        trainer.save()
    assert "\n" not in str(info.value) and result.checkpoint.read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["train.bogus=1"], "unknown key"),
    (["backbone.checkpoint=/nonexistent/clip.pt"], "does not exist; pass the local path"),
    (["data.source=/nonexistent/shards"], "/nonexistent/shards"),
    (["train.resume=/nonexistent/last.pt"], "does not exist"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
    code = main([*args, f"train.output_dir={tmp_path}", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_corrupt_resume_checkpoint(tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main([f"train.output_dir={tmp_path}", "train.resume=auto", *FAST]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err


@pytest.fixture
def float64_default():
    """Exact-arithmetic comparisons: the trainer's model and batches built in float64."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _single_batch_gradients(tmp_path: Path, *extra: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    trainer = make_trainer(tmp_path / "single", GLOBAL_BATCH, *extra)
    assert trainer.accum == 1
    return decoder_gradients(trainer, fixed_batch())


def _assert_same_gradients(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    # float64 end to end: only the order of the sums differs, so agreement is to ~1e-13 relative.
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name  # every parameter gets a gradient (the gates are open)
        torch.testing.assert_close(actual[name], grad, rtol=1e-9, atol=1e-12 * float(grad.abs().max()), msg=name)


@pytest.mark.parametrize("extra", [(), ("loss.chunk_size=3",)], ids=["whole-S", "chunked-S"])
def test_accumulated_micro_batches_give_the_full_batch_gradient(tmp_path, float64_default, extra):
    """4 micro-batches of 4 = one batch of 16: every caption of the step is a negative for every image.

    Per-micro-batch losses (the old accumulation) give a different gradient: checked here too, so
    the comparison can fail."""
    expected, expected_losses = _single_batch_gradients(tmp_path, *extra)
    trainer = make_trainer(tmp_path / "accum", 4, *extra)
    assert trainer.accum == 4
    actual, losses = decoder_gradients(trainer, fixed_batch())
    _assert_same_gradients(actual, expected)
    for key in (*LOSS_TERMS, *NORM_TERMS):
        assert losses[key] == pytest.approx(expected_losses[key], rel=1e-12)

    batch, local = fixed_batch(), {name: torch.zeros_like(g) for name, g in expected.items()}
    for start in range(0, GLOBAL_BATCH, 4):  # the old scheme: each micro-batch's own loss, averaged
        with torch.no_grad():
            text = trainer.model.encode_captions(batch["captions"][start:start + 4])
            features = trainer.model.backbone.dense_features(batch["images"][start:start + 4])
        pixels = trainer.model.decoder(features).flatten(2).transpose(1, 2)
        loss = trainer.loss_fn(pixels, text)["loss"] / 4
        for (_, g), param in zip(local.items(), trainer.model.decoder.parameters(), strict=True):
            g += torch.autograd.grad(loss, param, retain_graph=True)[0]
    assert max(float((local[n] - g).norm() / g.norm()) for n, g in expected.items()) > 1e-2


def test_micro_step_caches_the_step_and_logs_norms(tmp_path):
    """The frozen CLIP runs once per micro-batch; the step logs the mean norms of V and T."""
    result = make_trainer(tmp_path / "fit", 4, "train.max_steps=1").fit()
    record = result.history[0]
    assert record["v_norm"] > 0 and record["t_norm"] > 0 and all(math.isfinite(record[k]) for k in LOSS_TERMS)
    trainer = make_trainer(tmp_path / "count", batch_size=4)
    calls = []
    original = trainer.model.backbone.dense_features
    trainer.model.backbone.dense_features = lambda images: calls.append(len(images)) or original(images)
    decoder_gradients(trainer, fixed_batch())
    assert calls == [4, 4, 4, 4]


def test_loss_scale_reaches_the_parameters(tmp_path):
    """The fp16 GradScaler scales the full-batch loss; the cached dL/dV carries it into every parameter."""
    plain, _ = decoder_gradients(make_trainer(tmp_path / "plain", 4), fixed_batch())
    trainer = make_trainer(tmp_path / "scaled", 4)
    trainer.scaler.scale = lambda loss: loss * 1024.0
    scaled, _ = decoder_gradients(trainer, fixed_batch())
    for name, grad in plain.items():
        torch.testing.assert_close(scaled[name], 1024.0 * grad, rtol=1e-4, atol=1e-6 * float(grad.abs().max()) * 1024)


@pytest.mark.slow
def test_ddp_gradient_equals_single_process_full_batch(tmp_path, float64_default):
    """2 gloo ranks x 2 micro-batches of 4: the all-reduced gradient is the gradient of the loss over
    all 16 pairs, as one process computes it (per-rank negatives or a missing world_size factor fail)."""
    expected, expected_losses = _single_batch_gradients(tmp_path)
    env = subprocess_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    output = tmp_path / "grads"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.grad_check", str(output)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        saved = torch.load(f"{output}.rank{rank}")
        assert saved["accum"] == 2
        _assert_same_gradients(saved["grads"], expected)
        for key in (*LOSS_TERMS, *NORM_TERMS):
            assert saved["losses"][key] == pytest.approx(expected_losses[key], rel=1e-12)


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    """torchrun with 2 CPU processes: gradients all-reduced, replicas stay identical, rank 0 writes."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mgca.train", *FAST, "train.max_steps=3", f"train.output_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world 2" in proc.stdout and "replicas in sync" in proc.stdout
    payload = load_checkpoint(tmp_path / "last.pt")
    assert payload["train_state"]["step"] == 3
    history = json.loads((tmp_path / "history.json").read_text())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)


def test_resume_refuses_a_changed_recipe_and_allows_the_safe_keys(tmp_path, capsys):
    """The issue's keys each changed the run silently under train.resume=auto; now each is one line naming it."""
    from mgca.train import main

    from .support import train_args

    assert main(train_args(tmp_path, "train.max_steps=1")) == 0
    earlier = (tmp_path / "last.pt").read_bytes()
    for change in ("train.batch_size=2", "data.seed=1", "data.image_size=96", "train.seed=3",
                   "backbone.dense_mode=maskclip", "optim.epochs=2"):
        capsys.readouterr()
        code = main(train_args(tmp_path, "train.max_steps=2", "train.resume=auto", change))
        line = one_line_error(code, capsys.readouterr().err)
        assert f"recipe differs from this run's in {change.split('=')[0]} " in line and "--overwrite" in line, line
        assert (tmp_path / "last.pt").read_bytes() == earlier
    safe = ("train.max_steps=2", "train.resume=auto", "data.num_workers=1", "train.log_every=1", "train.device=cpu")
    assert main(train_args(tmp_path, *safe)) == 0, capsys.readouterr().err
    assert main(train_args(tmp_path, "train.max_steps=1", "train.batch_size=2", "--overwrite")) == 0


@pytest.mark.parametrize("override, needle", [
    ("data.image_size=70", "data.image_size=70 is not a multiple of the patch size 16"),
    ("train.device=tpu", "device 'tpu': TPUs (torch_xla) are not supported"),
    ("train.device=meta", "device 'meta' cannot be used: mgca runs on cpu, cuda, mps"),
    ("train.device=gpu0", "device 'gpu0' is not a device name"),
    ("train.device=cuda", "device 'cuda' cannot be used: no CUDA GPU is visible here"),
])
def test_training_device_and_image_size_errors_are_one_line(tmp_path, capsys, monkeypatch, override, needle):
    """Each gave a raw RuntimeError/ValueError (the image size only at step 0). No GPU is needed: CUDA is hidden."""
    import torch

    from mgca.train import main

    from .support import train_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(train_args(tmp_path, "train.max_steps=1", override))
    assert needle in one_line_error(code, capsys.readouterr().err)
    assert not (tmp_path / "last.pt").exists()


def test_training_refuses_to_overwrite_an_earlier_run(tmp_path, capsys):
    from mgca.train import main

    assert main(train_args(tmp_path, "train.max_steps=2")) == 0
    earlier = (tmp_path / "last.pt").read_bytes()
    capsys.readouterr()
    one_line_exit_2(main(train_args(tmp_path, "train.max_steps=1")), capsys.readouterr().err,
                    "last.pt holds an earlier run of 2 steps", "train.resume=auto", "--overwrite")
    assert (tmp_path / "last.pt").read_bytes() == earlier
    assert main(train_args(tmp_path, "train.max_steps=1", "--overwrite")) == 0
    assert torch.load(tmp_path / "last.pt", weights_only=True)["train_state"]["step"] == 1
    assert main(train_args(tmp_path, "train.max_steps=2", "train.resume=auto")) == 0  # continuing is no overwrite


def test_unwritable_output_dir_fails_before_training(tmp_path):
    from mgca.config import load_config
    from mgca.train import Trainer, embedded_config_path

    cfg = load_config(embedded_config_path(), ["pretrain.enabled=false", "backbone.arch=mgca-tiny",
                                               "train.output_dir=/proc/mgca-run"])
    with pytest.raises(ValueError, match="train.output_dir /proc/mgca-run cannot be written"):  # OutputPathError
        Trainer(cfg)
