"""SR_l: the first image super-resolution net (64 → 256 at paper scale)."""

from __future__ import annotations

from mav_train.components.super_res import SuperResolution


class SrLow(SuperResolution):
    """SR_l: low-res image (+ optionally the CLIP image embedding y_e) → image at ``data.resolution``.

    Trained on images; the low-res input is the training image downsampled to ``model.low_res`` (see
    :class:`SuperResolution`). Its video version SR_l^t (``temporal_sr_low``) is inflated from it.
    """
