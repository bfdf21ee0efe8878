"""The linear attribute probe of CLIP image embeddings (bench_quality reads the prior's embeddings with it)."""

from __future__ import annotations

import random

import pytest
import torch

from datamodules.heldout import heldout_images
from mav_train.config.schema import ClipConfig
from mav_train.evaluation.embedding_probe import fit_probe
from mav_train.nn.encoders import FrozenCLIP


def test_probe_reads_colour_from_an_untrained_toy_clip_and_not_from_shuffled_labels():
    # Even a random ResNet's embedding tells the shape's colour apart linearly; the labels come from captions.
    clip = FrozenCLIP(ClipConfig(model="toy"))
    probe = fit_probe(clip, "color", num=1024, seed=3)
    images, captions = heldout_images(64, seed=1, resolution=32)
    emb = clip.encode_image(images)
    right = probe.accuracy(emb, captions)
    shuffled = captions[:]
    random.Random(0).shuffle(shuffled)
    assert probe.held_out_accuracy > 0.6 and right > 0.6, (probe.held_out_accuracy, right)
    assert probe.accuracy(emb, shuffled) < right - 0.3
    assert probe.weight.shape == (emb.shape[1], 10) and not probe.weight.requires_grad
    assert torch.is_tensor(probe.bias)


def test_probe_names_what_it_cannot_read():
    with pytest.raises(ValueError, match="probe attribute must be one of"):
        fit_probe(FrozenCLIP(ClipConfig(model="toy")), "size", num=8)
