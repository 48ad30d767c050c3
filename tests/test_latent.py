"""VideoVAE (frames folded into the batch, micro-batches, scale/shift) and the on-disk latent cache.

Every VAE here is a tiny random AutoencoderKL built with diffusers in the test, so the reference values
come from diffusers' own encode/decode, frame by frame.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch.utils.data import DataLoader

diffusers = pytest.importorskip("diffusers")

from text2video.data import ShapesDataset  # noqa: E402
from text2video.errors import DataError, ModelError  # noqa: E402
from text2video.latent import LatentDataset, VideoVAE, load_vae, random_augmentations  # noqa: E402

SCALE, SHIFT = 0.5, 0.1


def make_raw_vae(seed: int = 0, **overrides) -> diffusers.AutoencoderKL:
    torch.manual_seed(seed)
    config = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=SCALE,
        shift_factor=SHIFT,
    )
    config.update(overrides)
    return diffusers.AutoencoderKL(**config).eval()


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    make_raw_vae().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def raw(vae_folder):
    return diffusers.AutoencoderKL.from_pretrained(str(vae_folder)).eval()


@pytest.fixture(scope="module")
def vae(vae_folder):
    return load_vae(vae_folder)


def video(b: int = 2, t: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, size, size, generator=gen) * 2 - 1


# ------------------------------------------------------------------------------------- loading


def test_load_from_vae_folder_and_sd_pipeline_folder(vae_folder, tmp_path, raw):
    direct = load_vae(vae_folder)
    assert isinstance(direct, VideoVAE)
    assert direct.latent_channels == 4 and direct.downsample_factor == 2
    assert direct.scaling_factor == SCALE and direct.shift_factor == SHIFT
    pipeline = tmp_path / "sd15"
    raw.save_pretrained(str(pipeline / "vae"))
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    nested = load_vae(pipeline)
    assert nested.id == direct.id  # same config and weights
    for (name, a), (_, b) in zip(direct.vae.state_dict().items(), raw.state_dict().items()):
        assert torch.equal(a, b), name


def test_vae_is_frozen_and_stays_in_eval(vae):
    assert not any(p.requires_grad for p in vae.parameters())
    vae.train()
    assert not vae.training and not vae.vae.training
    x = video(1, 1).requires_grad_(True)
    assert not vae.encode(x).requires_grad


def test_load_specs_tiny_and_none():
    assert load_vae(None) is None and load_vae("none") is None and load_vae("") is None
    tiny = load_vae("tiny")
    assert tiny.source == "tiny" and tiny.downsample_factor == 4
    assert load_vae("tiny").id == tiny.id  # seeded: the same random weights
    assert load_vae("tiny:1").id != tiny.id
    half = load_vae("tiny", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.id != tiny.id


def test_save_pretrained_round_trip(vae, tmp_path):
    vae.save_pretrained(tmp_path / "copy")
    assert load_vae(tmp_path / "copy").id == vae.id


# ------------------------------------------------------------------------------ encode / decode


@pytest.mark.parametrize("t", [1, 2, 5])
def test_shapes_for_several_clip_lengths(vae, t):
    x = video(2, t, 16)
    z = vae.encode(x)
    assert z.shape == (2, 4, t, 8, 8) == vae.latent_shape(x.shape)
    y = vae.decode(z)
    assert y.shape == x.shape == vae.pixel_shape(z.shape)
    assert y.min() >= -1 and y.max() <= 1


def test_scale_and_shift_against_raw_diffusers_frame_by_frame(vae, raw):
    x = video(2, 3)
    z = vae.encode(x, posterior="mode")
    pixels = vae.decode(z, clamp=False)
    with torch.no_grad():
        for t in range(x.shape[2]):
            mean = raw.encode(x[:, :, t]).latent_dist.mean
            torch.testing.assert_close(z[:, :, t], (mean - SHIFT) * SCALE, atol=1e-5, rtol=1e-5)
            ref = raw.decode(z[:, :, t] / SCALE + SHIFT).sample
            torch.testing.assert_close(pixels[:, :, t], ref, atol=1e-5, rtol=1e-5)


def test_round_trip_is_the_exact_composition_of_raw_encode_and_decode(vae, raw):
    # a random VAE reconstructs nothing; the round trip must still be decode(mean) of diffusers
    x = video(1, 2)
    out = vae(x)
    with torch.no_grad():
        for t in range(2):
            ref = raw.decode(raw.encode(x[:, :, t]).latent_dist.mean).sample.clamp(-1, 1)
            torch.testing.assert_close(out[:, :, t], ref, atol=1e-5, rtol=1e-5)


def test_micro_batches_equal_one_shot(vae_folder):
    small, big = load_vae(vae_folder, micro_batch=2), load_vae(vae_folder, micro_batch=64)
    x = video(2, 5)  # 10 frames: micro-batches of 2 vs one call
    torch.testing.assert_close(small.encode(x), big.encode(x), atol=1e-6, rtol=1e-5)
    a = small.encode(x, posterior="sample", generator=torch.Generator().manual_seed(3))
    b = big.encode(x, posterior="sample", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    z = big.encode(x)
    torch.testing.assert_close(small.decode(z), big.decode(z), atol=1e-6, rtol=1e-5)


def test_sample_posterior_is_mean_plus_scaled_std_noise(vae, raw):
    x = video(2, 1)
    drawn = vae.encode(x, posterior="sample", generator=torch.Generator().manual_seed(7))
    again = vae.encode(x, posterior="sample", generator=torch.Generator().manual_seed(7))
    assert torch.equal(drawn, again)
    noise = torch.randn(drawn.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        dist = raw.encode(x[:, :, 0]).latent_dist
    expected = (dist.mean - SHIFT) * SCALE + dist.std * SCALE * noise[:, :, 0]
    torch.testing.assert_close(drawn[:, :, 0], expected, atol=1e-5, rtol=1e-5)
    per_video = vae.encode(x, posterior="sample", generator=[torch.Generator().manual_seed(s) for s in (7, 8)])
    torch.testing.assert_close(per_video[:1], drawn[:1])  # row 0 drawn from seed 7 alone
    assert not torch.allclose(per_video[1:], drawn[1:])


def test_outputs_keep_input_dtype_and_vae_runs_in_its_own(vae_folder):
    bf = load_vae(vae_folder, dtype=torch.bfloat16)
    z = bf.encode(video(1, 2))
    assert z.dtype == torch.float32
    ref = load_vae(vae_folder).encode(video(1, 2))
    assert (z - ref).abs().max() < 0.1  # bf16 arithmetic, same function
    assert bf.decode(z).dtype == torch.float32


def test_scaling_factor_estimate_gives_unit_variance(vae_folder):
    v = load_vae(vae_folder)
    x = video(4, 2, seed=3)
    old_id = v.id
    factor = v.estimate_scaling_factor(x)
    v.set_scaling_factor(factor)
    assert v.id != old_id
    z = v.encode(x) + SHIFT * factor  # remove the shift: scaled means of z_raw
    assert abs(float(z.std()) - 1.0) < 1e-3


def test_slicing_and_tiling_pass_through(vae_folder):
    v = load_vae(vae_folder)
    x = video(2, 2)
    ref = v.encode(x)
    v.enable_slicing()
    assert v.vae.use_slicing
    torch.testing.assert_close(v.encode(x), ref, atol=1e-6, rtol=1e-5)
    v.disable_slicing()
    v.enable_tiling()
    assert v.vae.use_tiling
    v.disable_tiling()
    assert not v.vae.use_tiling


# --------------------------------------------------------------------------------------- errors


def test_bad_folders(tmp_path, raw):
    with pytest.raises(ModelError, match="not found"):
        load_vae(tmp_path / "missing")
    with pytest.raises(ModelError, match="not a VAE folder"):
        load_vae(tmp_path)
    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelError, match="not an AutoencoderKL"):
        load_vae(other)
    no_weights = tmp_path / "noweights"
    raw.save_config(str(no_weights))
    with pytest.raises(ModelError, match="no weights"):
        load_vae(no_weights)
    file = tmp_path / "vae.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(ModelError, match="from_single_file"):
        load_vae(file)
    with pytest.raises(ModelError, match="tiny:SEED"):
        load_vae("tiny:abc")


def test_bad_shapes(vae):
    with pytest.raises(ModelError, match="divisible by the VAE's downsample factor 2"):
        vae.encode(video(1, 1, size=15))
    with pytest.raises(ModelError, match=r"\(B, C, T, H, W\)"):
        vae.encode(torch.zeros(3, 2, 16, 16))
    with pytest.raises(ModelError, match="3-channel"):
        vae.encode(torch.zeros(1, 1, 2, 16, 16))
    with pytest.raises(ModelError, match="latent_channels"):
        vae.decode(torch.zeros(1, 3, 2, 8, 8))
    with pytest.raises(ModelError, match="posterior"):
        vae.encode(video(1, 1), posterior="median")
    with pytest.raises(ModelError, match="one per video"):
        vae.encode(video(2, 1), posterior="sample", generator=[torch.Generator()])


# --------------------------------------------------------------------------------- latent cache


def shapes(**kw) -> ShapesDataset:
    options = dict(n=4, num_frames=2, size=16, seed=0)
    options.update(kw)
    return ShapesDataset(**options)


def test_cache_miss_then_hit_and_values(vae, tmp_path):
    data = shapes()
    latents = LatentDataset(data, vae, tmp_path, posterior="mode")
    first = latents[1]
    assert (latents.misses, latents.hits) == (1, 0)
    second = latents[1]
    assert (latents.misses, latents.hits) == (1, 1)
    assert first["latent"] is True and first["text"] == data[1]["text"] and first["path"] == data[1]["path"]
    assert first["factors"] == data[1]["factors"] and torch.equal(first["centres"], data[1]["centres"])
    expected = vae.encode(data[1]["video"][None])[0]
    torch.testing.assert_close(first["video"], expected)
    assert torch.equal(first["video"], second["video"])
    assert latents.latent_shape() == (4, 2, 8, 8)


def test_cache_reused_across_instances_and_sample_draws_vary(vae_folder, tmp_path):
    data = shapes()
    one = LatentDataset(data, load_vae(vae_folder), tmp_path)
    assert one.precompute(progress=False) == 4 and one.precompute(progress=False) == 0
    other = LatentDataset(shapes(), load_vae(vae_folder), tmp_path, posterior="mode")
    mean = other[2]["video"]
    assert (other.misses, other.hits) == (0, 1)
    torch.manual_seed(0)
    a, b = one[2]["video"], one[2]["video"]
    assert one.misses == 4 and not torch.equal(a, b)  # fresh posterior noise at every read
    entry = other.entry(2)
    assert ((a - mean).abs() <= 6 * entry.std + 1e-6).all()


def test_cache_invalidated_by_vae_and_dataset_settings(vae_folder, tmp_path):
    data = shapes()
    LatentDataset(data, load_vae(vae_folder), tmp_path).precompute(progress=False)
    for changed in (load_vae("tiny"), VideoVAE(make_raw_vae(seed=5))):
        other = LatentDataset(data, changed, tmp_path)
        assert other.cache.folder != LatentDataset(data, load_vae(vae_folder), tmp_path).cache.folder
        assert 0 not in other
    rescaled = load_vae(vae_folder)
    rescaled.set_scaling_factor(1.0)
    assert 0 not in LatentDataset(data, rescaled, tmp_path)
    assert 0 not in LatentDataset(shapes(seed=1), load_vae(vae_folder), tmp_path)
    assert 0 in LatentDataset(shapes(), load_vae(vae_folder), tmp_path)


def test_dataloader_with_two_workers(vae, tmp_path):
    data = shapes(n=6)
    latents = LatentDataset(data, vae, tmp_path, posterior="mode")
    loader = DataLoader(latents, batch_size=3, num_workers=2)
    batches = list(loader)
    assert len(latents.cache) == 6  # the workers wrote every entry
    video = torch.cat([b["video"] for b in batches])
    assert video.shape == (6, 4, 2, 8, 8) and bool(torch.cat([b["latent"] for b in batches]).all())
    fresh = LatentDataset(data, vae, tmp_path, posterior="mode")
    again = torch.stack([fresh[i]["video"] for i in range(6)])
    assert fresh.misses == 0
    torch.testing.assert_close(video, again)


def test_random_augmentation_policy(tmp_path, vae, caplog):
    from text2video.data import FolderVideoDataset
    from text2video.io.video import write_video

    folder = tmp_path / "clips"
    folder.mkdir()
    frames = (torch.rand(4, 16, 16, 3) * 255).to(torch.uint8).numpy()
    write_video(frames, folder / "a.gif", fps=4)
    (folder / "a.txt").write_text("first caption\nsecond caption\n")
    random = FolderVideoDataset(folder, num_frames=2, size=16, random_clip=True, hflip=0.5)
    assert len(random_augmentations(random)) == 2
    with pytest.raises(DataError, match="random_clip=False"):
        LatentDataset(random, vae, tmp_path / "cache", augmentations="error")
    with caplog.at_level(logging.WARNING, logger="text2video.latent.cache"):
        LatentDataset(random, vae, tmp_path / "cache")
    assert "first draw" in caplog.text
    fixed = FolderVideoDataset(folder, num_frames=2, size=16, random_clip=False)
    assert random_augmentations(fixed) == []
    latents = LatentDataset(fixed, vae, tmp_path / "cache", augmentations="error", posterior="mode")
    assert latents.dataset_key != LatentDataset(random, vae, tmp_path / "cache", augmentations="freeze").dataset_key
    torch.manual_seed(0)
    texts = {latents[0]["text"] for _ in range(20)}
    assert texts == {"first caption", "second caption"}  # captions still picked per read
    assert latents.misses == 1
    assert 0 in latents
    write_video(frames[::-1].copy(), folder / "a.gif", fps=4)  # the video changes: its entry is stale
    import os

    os.utime(folder / "a.gif", ns=(1, 1))
    assert 0 not in latents
    with pytest.raises(DataError, match="unknown augmentations"):
        LatentDataset(fixed, vae, tmp_path / "cache", augmentations="sometimes")


# -------------------------------------------------------------------------------------- fit_vae


def test_fit_vae_lowers_reconstruction_error_and_refreezes(vae_folder):
    from text2video.latent import fit_vae

    v = load_vae(vae_folder)
    old_id = v.id
    data = shapes(n=8, num_frames=2)
    result = fit_vae(v, data, steps=30, batch_frames=8, lr=3e-3)
    assert len(result["losses"]) == 30
    assert result["mse_after"] < 0.5 * result["mse_before"]
    assert not any(p.requires_grad for p in v.parameters()) and not v.vae.training
    assert v.id != old_id  # new weights, new cache folder
    x = torch.stack([data[i]["video"] for i in range(8)])
    recon = v.vae.decode(v.vae.encode(x[:, :, 0]).latent_dist.mean).sample.detach()
    torch.testing.assert_close(float(((recon - x[:, :, 0]) ** 2).mean()), result["mse_after"], atol=0.02, rtol=0.3)
    z = v.encode(x) + SHIFT * v.scaling_factor
    assert abs(float(z.std()) - 1.0) < 0.05  # rescaled to unit variance
