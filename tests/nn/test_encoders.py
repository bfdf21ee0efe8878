"""FrozenCLIP: a tiny random open_clip CLIP, no network."""

import json
import socket

import open_clip
import pytest
import torch
from omegaconf import OmegaConf

from mav_train.config.schema import ClipConfig
from mav_train.nn.encoders import FrozenCLIP, TextEncoding

CAPTIONS = ["a red ball bouncing", "", "word " * 100]


@pytest.fixture(scope="module")
def clip() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP(ClipConfig())


def test_text_shapes_and_mask(clip):
    enc = clip.encode_text(CAPTIONS)
    assert isinstance(enc, TextEncoding)
    assert enc.pooled.shape == (3, clip.embed_dim) == (3, 32)
    assert enc.states.shape == (3, clip.context_length, clip.text_width) == (3, 32, 64)
    assert enc.mask.dtype == torch.bool and enc.mask.shape == (3, 32)
    eot = clip.tokenizer.eot_token_id
    for row in range(3):
        n = int(enc.mask[row].sum())
        assert enc.mask[row, :n].all() and not enc.mask[row, n:].any()
        assert enc.tokens[row, n - 1].item() == eot
        assert (enc.tokens[row, n:] == 0).all()
    assert enc.mask[1].sum().item() == 2  # SOT, EOT for the empty caption
    assert enc.mask[2].all()  # truncated to the context length, EOT kept last


def test_tokenizer_context_length(clip):
    assert clip.context_length == ClipConfig().custom_cfg["text_cfg"]["context_length"] == 32
    assert clip.tokenize(["hello"]).shape == (1, 32)
    assert clip.tokenizer.context_length == 32


def test_pooled_is_eot_state_times_projection(clip):
    enc = clip.encode_text(CAPTIONS)
    eot = enc.mask.sum(dim=1) - 1
    by_hand = enc.states[torch.arange(3), eot] @ clip.model.text_projection
    assert torch.allclose(enc.pooled, by_hand, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(enc.pooled, clip.model.encode_text(enc.tokens), atol=1e-6)
    normed = clip.encode_text(CAPTIONS, normalize=True).pooled
    assert torch.allclose(normed.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(normed, torch.nn.functional.normalize(enc.pooled, dim=-1), atol=1e-6)


def test_frozen_and_stays_eval(clip):
    assert not any(p.requires_grad for p in clip.parameters())
    parent = torch.nn.Sequential(clip, torch.nn.Linear(2, 2))
    parent.train()
    assert not clip.training and not any(m.training for m in clip.modules())
    assert parent[1].training
    images = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    with torch.enable_grad():
        assert not clip.encode_image(images).requires_grad
        assert not clip.encode_text(["a"]).pooled.requires_grad


@pytest.mark.parametrize("size", [(32, 32), (17, 45), (64, 48), (100, 100)])
def test_encode_image_any_size(clip, size):
    images = torch.rand(2, 3, *size) * 2 - 1
    out = clip.encode_image(images)
    assert out.shape == (2, clip.embed_dim) and torch.isfinite(out).all()
    assert clip.preprocess(images).shape == (2, 3, clip.image_size, clip.image_size)


def test_encode_image_preprocessing(clip):
    # Native size: only the [-1,1] -> [0,1] map and CLIP mean/std.
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    assert torch.allclose(clip.preprocess(images), ((images + 1) / 2 - mean) / std, atol=1e-6)
    # A wide image is centre-cropped: random side bands do not change the embedding.
    wide = torch.rand(1, 3, 32, 64) * 2 - 1
    wide[..., 16:48] = images
    assert torch.allclose(clip.encode_image(wide), clip.encode_image(images), atol=1e-6)
    # A constant image stays constant through the resize.
    grey = torch.full((1, 3, 50, 70), 0.25)
    assert torch.allclose(clip.preprocess(grey), clip.preprocess(torch.full((1, 3, 32, 32), 0.25)), atol=1e-5)
    assert torch.allclose(clip.encode_image(images, normalize=True).norm(dim=-1), torch.ones(1), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32\)"):
        clip.encode_image(torch.zeros(1, 1, 32, 32))


def test_no_network_is_used(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    clip = FrozenCLIP(ClipConfig())
    assert clip.encode_text(["offline"]).pooled.shape == (1, 32)


def test_local_weights_roundtrip(clip, tmp_path):
    path = tmp_path / "clip.pt"
    torch.save(clip.model.state_dict(), path)
    torch.manual_seed(123)
    loaded = FrozenCLIP(ClipConfig(pretrained=str(path)))
    images = torch.rand(2, 3, 40, 40) * 2 - 1
    assert torch.equal(loaded.encode_image(images), clip.encode_image(images))
    assert torch.equal(loaded.encode_text(CAPTIONS).states, clip.encode_text(CAPTIONS).states)
    other_seed = FrozenCLIP(ClipConfig(seed=1))
    assert not torch.allclose(other_seed.encode_image(images), clip.encode_image(images))
    assert loaded.fingerprint == clip.fingerprint != other_seed.fingerprint


def test_random_clip_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    a = FrozenCLIP(ClipConfig())
    assert torch.equal(torch.rand(3), expected_next), "building a CLIP must not advance the global RNG"
    torch.manual_seed(99)  # a different global state must not change the weights
    b = FrozenCLIP(ClipConfig())
    assert a.fingerprint == b.fingerprint
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


FINGERPRINT_SCRIPT = """
import torch, sys
torch.manual_seed(int(sys.argv[1]))
torch.rand(int(sys.argv[1]) + 1)
from mav_train.config.schema import ClipConfig
from mav_train.nn.encoders import FrozenCLIP
clip = FrozenCLIP(ClipConfig(model="toy"))
print(clip.fingerprint, float(clip.encode_text(["a red circle in the middle on a blue background"]).pooled.sum()))
"""


def test_random_clip_is_the_same_in_two_processes():
    import subprocess
    import sys

    outs = [subprocess.run([sys.executable, "-c", FINGERPRINT_SCRIPT, str(seed)], capture_output=True, text=True,
                           check=True).stdout.split() for seed in (1, 2)]
    assert outs[0] == outs[1], outs


def test_named_model_with_local_file(clip, tmp_path):
    # A named open_clip architecture (registered locally, as users do for their own configs) + a weights file.
    name = "mav-train-tiny-test"
    (tmp_path / f"{name}.json").write_text(json.dumps(ClipConfig().custom_cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    path = tmp_path / "weights.pt"
    torch.save(clip.model.state_dict(), path)
    named = FrozenCLIP(ClipConfig(model=name, pretrained=str(path)))
    assert torch.equal(named.encode_text(CAPTIONS).pooled, clip.encode_text(CAPTIONS).pooled)
    with pytest.raises(ValueError, match="neither a local file nor a pretrained tag"):
        FrozenCLIP(ClipConfig(model=name, pretrained="openai"))


def test_missing_checkpoint_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope" / "clip.pt")
    with pytest.raises(FileNotFoundError, match="nope/clip.pt"):
        FrozenCLIP(ClipConfig(pretrained=missing))
    with pytest.raises(FileNotFoundError, match="clip.safetensors"):
        FrozenCLIP(ClipConfig(model="ViT-B-32", pretrained="clip.safetensors"))
    with pytest.raises(FileNotFoundError, match="model=custom"):
        FrozenCLIP(ClipConfig(pretrained="openai"))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="ViT-B-32"):
        FrozenCLIP(ClipConfig(model="ViT-B-33"))


def test_accepts_omegaconf_config():
    cfg = OmegaConf.structured(ClipConfig())
    assert FrozenCLIP(cfg).embed_dim == 32


def test_toy_image_tower_runs_channels_last_with_the_same_values_and_fingerprint():
    clip = FrozenCLIP(ClipConfig(model="toy"))
    conv = clip.model.visual.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    plain = FrozenCLIP(ClipConfig(model="toy"))
    plain.model.visual.to(memory_format=torch.contiguous_format)
    assert plain.model.visual.conv1.weight.is_contiguous()
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(clip.encode_image(images), plain.encode_image(images), atol=1e-5, rtol=1e-4)
    assert clip.fingerprint == plain.fingerprint
