"""The DCGAN on generated faces (models.faces.synthetic_face, recoloured), in an export-shaped tree.

Small networks (width 8) and few faces keep each epoch to a few steps on the CPU: the tests are
about the machinery (shapes, finite losses, checkpoints, resume, sampling), not face quality.
They run on the CPU even where there is a GPU: the resume test compares weights bit for bit, and
cuDNN's kernels are not deterministic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import gan
from models.faces import synthetic_face
from models.gan import Discriminator, GanConfig, GanError, Generator

REPO = Path(__file__).resolve().parents[2]
SMALL = GanConfig(generator_width=8, discriminator_width=8, batch_size=8, seed=3)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_faces(root: Path, count: int = 24) -> Path:
    """A `scrapy export --faces` tree: DEST/{train,val}/all/*.jpg, plus PNGs to show both are read."""
    rng = np.random.default_rng(0)
    base = np.asarray(synthetic_face(96), dtype=np.int16)
    for index in range(count):
        shifted = (base + rng.integers(-40, 40, 3)).clip(0, 255).astype(np.uint8)
        picture = Image.fromarray(shifted)
        split = "val" if index % 6 == 0 else "train"
        folder = root / split / "all"
        folder.mkdir(parents=True, exist_ok=True)
        if index % 4 == 0:
            picture.save(folder / f"face_{index:03d}.png")
        else:
            picture.save(folder / f"face_{index:03d}.jpg", quality=92)
    (root / "manifest.json").write_text("{}")  # an export's manifest: not a picture, ignored
    return root


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return write_faces(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def two_epochs(faces, tmp_path_factory):
    out = tmp_path_factory.mktemp("gan")
    result = gan.train(faces, out, epochs=2, checkpoint_every=1, config=SMALL, sample_count=16, device="cpu",
                       progress=False)
    return out, result


def test_networks_have_the_dcgan_shape():
    for size in (96, 64):
        config = GanConfig(image_size=size, generator_width=8, discriminator_width=8)
        generator, discriminator = Generator(config), Discriminator(config)
        faces = generator(torch.randn(3, 100))
        assert faces.shape == (3, 3, size, size)
        assert faces.min() >= -1 and faces.max() <= 1
        assert discriminator(faces).shape == (3,)
    layers = [type(m).__name__ for m in Generator(GanConfig()).net]
    assert layers.count("ConvTranspose2d") == 5 and layers[-1] == "Tanh"
    assert Generator(GanConfig()).net[0].kernel_size == (6, 6)  # 1x1 noise to a 6x6 map, then 12, 24, 48, 96
    with pytest.raises(GanError, match="multiple of 16"):
        GanConfig(image_size=100)


def test_a_few_steps_give_finite_losses_and_the_files(two_epochs):
    out, result = two_epochs
    assert result.epochs_run == [1, 2]
    history = result.card["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert all(np.isfinite(row[key]) for key in ("loss_d", "loss_g", "d_real", "d_fake"))
        assert 0 <= row["d_real"] <= 1 and row["images_per_second"] > 0
    assert result.card["data"]["faces"] == 24  # jpg and png, both splits, manifest.json left out
    for name in ("samples/epoch_0001.png", "samples/epoch_0002.png", "checkpoints/epoch_0001.pt",
                 "checkpoints/epoch_0002.pt", "losses.png", "gan.json"):
        assert (out / name).is_file(), name
    with Image.open(out / "samples" / "epoch_0002.png") as sheet:
        assert sheet.size == (4 * 98 + 2, 4 * 98 + 2)  # 16 fixed-noise faces in a 4x4 grid, 2 px apart
    assert json.loads((out / "gan.json").read_text())["epoch"] == 2


def test_checkpoint_round_trips(two_epochs):
    out, _ = two_epochs
    checkpoint = gan.load_gan(out / "checkpoints" / "epoch_0002.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["config"] == {**SMALL.__dict__}
    assert len(checkpoint["history"]["steps"]["loss_d"]) == 2 * (24 // 8)
    state = gan.restore_state(checkpoint, torch.device("cpu"))
    again = gan.state_checkpoint(state, checkpoint["data"])
    for key in ("generator", "discriminator"):
        assert checkpoint[key].keys() == again[key].keys()
        assert all(torch.equal(checkpoint[key][name], again[key][name]) for name in checkpoint[key])
    for key in ("generator_optimizer", "discriminator_optimizer"):
        before, after = checkpoint[key]["state"], again[key]["state"]
        assert before.keys() == after.keys()
        assert all(torch.equal(before[i]["exp_avg"], after[i]["exp_avg"]) for i in before)
    assert torch.equal(checkpoint["random_state"], again["random_state"])
    assert torch.equal(checkpoint["fixed_noise"], again["fixed_noise"])


def test_resume_continues_from_the_saved_epoch_as_if_never_stopped(faces, two_epochs, tmp_path):
    out, _ = two_epochs
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "checkpoints").mkdir()
    (resumed_dir / "checkpoints" / "epoch_0002.pt").write_bytes((out / "checkpoints" / "epoch_0002.pt").read_bytes())
    resumed = gan.train(faces, resumed_dir, epochs=3, checkpoint_every=5, resume=True, device="cpu", progress=False)
    assert resumed.epochs_run == [3]
    assert [row["epoch"] for row in resumed.card["history"]] == [1, 2, 3]
    assert resumed.checkpoint_path == resumed_dir / "checkpoints" / "epoch_0003.pt"  # the last epoch is always saved

    straight = gan.train(faces, tmp_path / "straight", epochs=3, checkpoint_every=1, config=SMALL, sample_count=16,
                         device="cpu", progress=False)
    a = gan.load_gan(resumed.checkpoint_path)
    b = gan.load_gan(straight.checkpoint_path)
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    assert a["history"]["steps"] == b["history"]["steps"]

    nothing = gan.train(faces, resumed_dir, epochs=3, resume=True, progress=False)
    assert nothing.epochs_run == []
    with pytest.raises(GanError, match="nothing to resume"):
        gan.train(faces, tmp_path / "empty", epochs=1, resume=True, progress=False)


def test_sample_command_in_a_fresh_process_matches(two_epochs, tmp_path):
    """`scrapy gan sample` reloads the checkpoint in a new process and draws the same faces."""
    out, _ = two_epochs
    checkpoint = out / "checkpoints" / "epoch_0002.pt"
    here = gan.sample(checkpoint, 5, tmp_path / "here", seed=7, device="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "scrapy", "gan", "sample", str(checkpoint), "5", str(tmp_path / "there"),
         "--seed", "7", "--device", "cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert f"Wrote 5 faces and grid.png to {tmp_path / 'there'}" in done.stdout
    assert [p.name for p in here] == [f"sample_{i:04d}.png" for i in range(5)]
    for path in here:
        with Image.open(path) as mine, Image.open(tmp_path / "there" / path.name) as theirs:
            assert mine.size == (96, 96)
            assert np.array_equal(np.asarray(mine), np.asarray(theirs))
    assert (tmp_path / "there" / "grid.png").is_file()


def test_unusable_inputs_are_clear_errors(tmp_path):
    (tmp_path / "one").mkdir()
    Image.new("RGB", (96, 96)).save(tmp_path / "one" / "a.jpg")
    with pytest.raises(GanError, match="1 readable face pictures"):
        gan.train(tmp_path / "one", tmp_path / "out", epochs=1, config=SMALL, progress=False)
    (tmp_path / "x.pt").write_bytes(b"junk")
    with pytest.raises(GanError, match="not a torch checkpoint"):
        gan.sample(tmp_path / "x.pt", 2, tmp_path / "s")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_bf16_and_a_checkpoint_that_samples_on_the_cpu(faces, tmp_path):
    result = gan.train(faces, tmp_path / "gpu", epochs=1, config=SMALL, device="cuda", progress=False)
    assert result.card["device"].startswith("cuda") and result.card["bf16_autocast"] == torch.cuda.is_bf16_supported()
    assert np.isfinite(result.card["history"][0]["loss_g"])
    assert len(gan.sample(result.checkpoint_path, 3, tmp_path / "cpu", device="cpu")) == 3
