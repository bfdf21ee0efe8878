"""Reading one toy-world frame: which background, which shape of which colour, where and how big.

The reader uses the generator's own knowledge (``datamodules.toy_world``): the palette, the five shapes and
``draw_scene`` itself as the template renderer, and the caption's position and size rules. Pure numpy + PIL.

Steps for an ``h w 3`` uint8 frame: the background is the palette colour most border pixels are nearest to; the
shape is what lies far from the measured background colour; its colour is the palette colour nearest to the median
of the half of those pixels farthest from the background (a soft edge, blended with the background, does not pull it
toward the background: 0.75 px of blur at 32 px misread 12% of colours with the median of them all). Every pixel is
then placed on the segment background → shape colour (anti-aliased edges lie on it), which gives a soft mask (the
first few levels off the background count as background, so that faint noise does not add up), the centroid and the
area. Each of the five shapes is rendered with ``draw_scene`` at that centre and at the size that gives that area;
the best soft IoU names the shape. A frame is unreadable when the border is not mostly one palette colour, when
there is (almost) no shape, when many pixels are neither background nor shape colour (noise), or when no template
fits (several blobs, smears).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datamodules.toy_world import COLORS, SHAPES, Scene, draw_scene, place_of, size_word

PALETTE = np.array([rgb for _, rgb in COLORS], dtype=np.float32)  # (10, 3)
# Shape area as a fraction of size² (size = the shape's extent, Scene.size): circle π/4, square 1, triangle with
# circumradius size/2: 3√3/16, diamond 1/2, cross (arms a third of the extent wide) 5/9.
AREA_PER_SIZE2 = {"circle": math.pi / 4, "square": 1.0, "triangle": 3 * math.sqrt(3) / 16, "diamond": 0.5,
                  "cross": 5 / 9}
NEAR_PALETTE = 48.0  # a border pixel this close (RGB distance) to a palette colour counts as that colour
BACKGROUND_MIN_SHARE = 0.5  # the background colour must hold this share of the border pixels
FAR_FROM_BACKGROUND = 35.0  # shape core: farther than this from the background (closest two colours: 71 apart)
MIN_AREA = 0.004  # a shape covers at least this fraction of the frame
ON_SEGMENT = 40.0  # a pixel is explained when this close to the background → shape colour segment
MIN_EXPLAINED = 0.9  # ... and this share of all pixels must be explained
MIN_IOU = 0.5  # the best template must overlap the soft mask at least this much
# Pixels within this many RGB levels of the background (along the background -> shape colour axis) count as pure
# background in the soft mask: without it, noise of a level or two spread over thousands of background pixels
# added as much mass as a small shape has, moving the centroid and inflating the area (SR_l samples with
# background noise of std 0.9 levels: 4 of 64 small shapes misread, all 64 read with the dead zone).
MASK_DEAD_ZONE = 3.0


@dataclass(frozen=True)
class Reading:
    """What one frame shows. ``centroid`` is (x, y) in pixels (0 = the first pixel's centre); ``area`` is the
    shape's fraction of the frame; ``size_fraction`` the shape's extent as a fraction of the frame side (as
    ``Scene.size``); ``iou`` the best template's soft IoU. Everything but ``readable`` is None when unreadable,
    and ``background`` may be set although the frame is unreadable."""

    readable: bool
    background: str | None = None
    color: str | None = None
    shape: str | None = None
    position: str | None = None
    size: str | None = None
    centroid: tuple[float, float] | None = None
    area: float | None = None
    size_fraction: float | None = None
    iou: float | None = None
    why: str = ""
    mask: np.ndarray | None = None  # h w float32 in [0, 1] (soft shape mask), None when unreadable


def nearest_palette(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n 3`` float pixels → (palette index, RGB distance), each of shape ``n``."""
    distances = np.linalg.norm(pixels[:, None, :] - PALETTE[None], axis=-1)
    index = distances.argmin(axis=1)
    return index, distances[np.arange(len(pixels)), index]


def _border(image: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels (width 1, 2 from 64 px) as ``n 3`` float."""
    width = max(1, image.shape[0] // 32)
    ring = np.ones(image.shape[:2], dtype=bool)
    ring[width:-width, width:-width] = False
    return image[ring]


def _background(image: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(palette index, measured RGB) of the background, or None when the border is not mostly one colour."""
    border = _border(image)
    index, distance = nearest_palette(border)
    near = distance < NEAR_PALETTE
    if not near.any():
        return None
    mode = int(np.bincount(index[near], minlength=len(PALETTE)).argmax())
    members = near & (index == mode)
    if members.mean() < BACKGROUND_MIN_SHARE:
        return None
    return mode, np.median(border[members], axis=0)


def template(shape: str, cx: float, cy: float, size: float, resolution: int) -> np.ndarray:
    """``draw_scene``'s rendering of ``shape`` centred at (cx, cy) (fractions) as an ``h w`` mask in [0, 1]."""
    scene = Scene(shape=shape, color=6, background=7, size=size, x=cx, y=cy)  # white on black
    white, black = PALETTE[6, 0], PALETTE[7, 0]
    channel = np.asarray(draw_scene(scene, resolution), dtype=np.float32)[..., 0]
    return np.clip((channel - black) / (white - black), 0.0, 1.0)


def soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``h w`` masks in [0, 1] (sum of minima over sum of maxima)."""
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-6))


def _fit_size(shape: str, cx: float, cy: float, area: float, resolution: int) -> tuple[float, np.ndarray]:
    """(size, template) of ``shape`` whose rendered area matches ``area``: the ideal-geometry size, corrected
    once by the area ``draw_scene`` actually paints at that size (its edges add about a pixel)."""
    size = math.sqrt(area / AREA_PER_SIZE2[shape])
    painted = template(shape, cx, cy, size, resolution).mean()
    size *= math.sqrt(area / max(float(painted), 1e-6))
    return size, template(shape, cx, cy, size, resolution)


def shape_fits(mask: np.ndarray, cx: float, cy: float, area: float) -> dict[str, tuple[float, float]]:
    """Per shape, (IoU, size fraction) of its template centred at (cx, cy) (fractions) at the size that paints
    ``area``, against the soft ``mask``."""
    fits = {}
    for shape in SHAPES:
        size, drawn = _fit_size(shape, cx, cy, area, mask.shape[0])
        fits[shape] = (soft_iou(mask, drawn), size)
    return fits


def _best_shape(mask: np.ndarray, cx: float, cy: float, area: float) -> tuple[str, float, float]:
    """(shape, size fraction, IoU) of the template that fits ``mask`` best."""
    iou, shape, size = max((iou, shape, size) for shape, (iou, size) in shape_fits(mask, cx, cy, area).items())
    return shape, size, iou


def read_image(image: np.ndarray) -> Reading:
    """Read one square ``h w 3`` uint8 frame (see the module docstring). Never raises on content; raises
    ValueError for an array that is not a square RGB frame."""
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"read_image expects a square h w 3 frame, got shape {tuple(image.shape)}")
    pixels = np.asarray(image, dtype=np.float32)
    found = _background(pixels)
    if found is None:
        return Reading(readable=False, why="no single background colour on the border")
    background_index, background = found
    background_name = COLORS[background_index][0]
    distance = np.linalg.norm(pixels - background, axis=-1)
    core = distance > FAR_FROM_BACKGROUND
    if core.mean() < MIN_AREA:
        return Reading(readable=False, background=background_name, why="no shape")
    inner = core & (distance >= np.median(distance[core]))
    foreground = np.median(pixels[inner], axis=0)
    color_index = int(nearest_palette(foreground[None])[0][0])
    if color_index == background_index:
        return Reading(readable=False, background=background_name, why="shape colour equals the background")
    axis = foreground - background
    t = ((pixels - background) @ axis) / float(axis @ axis)
    dead = MASK_DEAD_ZONE / float(np.linalg.norm(axis))
    mask = np.clip((t - dead) / (1.0 - dead), 0.0, 1.0)
    residual = np.linalg.norm(pixels - background - mask[..., None] * axis, axis=-1)
    explained = float((residual < ON_SEGMENT).mean())
    if explained < MIN_EXPLAINED:
        return Reading(readable=False, background=background_name, why=f"only {explained:.0%} of pixels explained")
    mass = float(mask.sum())
    size_px = image.shape[0]
    ys, xs = np.mgrid[0:size_px, 0:size_px]
    cx, cy = float((mask * xs).sum() / mass), float((mask * ys).sum() / mass)
    area = mass / mask.size
    fx, fy = (cx + 0.5) / size_px, (cy + 0.5) / size_px
    shape, size, iou = _best_shape(mask, fx, fy, area)
    if iou < MIN_IOU:
        return Reading(readable=False, background=background_name, why=f"no template fits (best IoU {iou:.2f})")
    return Reading(readable=True, background=background_name, color=COLORS[color_index][0], shape=shape,
                   position=place_of(fx, fy), size=size_word(size), centroid=(cx, cy), area=area,
                   size_fraction=size, iou=iou, mask=mask)
