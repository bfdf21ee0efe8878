"""The toy world: one coloured shape on a coloured background, still (images) or moving (videos)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

COLORS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 40, 40)),
    ("green", (40, 170, 60)),
    ("blue", (40, 70, 220)),
    ("yellow", (240, 210, 40)),
    ("purple", (140, 50, 180)),
    ("orange", (245, 140, 30)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
    ("pink", (240, 130, 190)),
    ("cyan", (40, 200, 210)),
)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
SUPERSAMPLE = 2  # draw at 2x and downsample for smooth edges


@dataclass(frozen=True)
class Scene:
    """A shape of ``size`` (fraction of the frame) at ``(x, y)`` (fractions), moving ``(vx, vy)``/s."""

    shape: str
    color: int  # index into COLORS
    background: int
    size: float
    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0
    pulse: float = 0.0  # relative size oscillation amplitude (videos)


def random_scene(rng: np.random.Generator, moving: bool) -> Scene:
    color, background = rng.choice(len(COLORS), size=2, replace=False)
    size = _size_from_uniform(float(rng.uniform(0.0, 1.0)))
    speed = float(rng.uniform(0.15, 0.5)) if moving else 0.0
    angle = float(rng.uniform(0.0, 2 * math.pi))
    return Scene(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        color=int(color),
        background=int(background),
        size=size,
        x=float(rng.uniform(size / 2, 1 - size / 2)),
        y=float(rng.uniform(size / 2, 1 - size / 2)),
        vx=speed * math.cos(angle),
        vy=speed * math.sin(angle),
        pulse=float(rng.uniform(0.0, 0.3)) if moving and rng.random() < 0.5 else 0.0,
    )


# Shape sizes (fractions of the frame) come from three bands, one per caption size word, with gaps around the
# caption thresholds (SMALL_BELOW, LARGE_ABOVE): with one continuous range a third of all shapes lay within a pixel
# of a threshold at 32 px, so their size word was unreadable for any model or judge.
SIZE_BANDS: tuple[tuple[float, float], ...] = ((0.20, 0.26), (0.30, 0.36), (0.40, 0.46))


def _size_from_uniform(u: float) -> float:
    band = min(int(u * len(SIZE_BANDS)), len(SIZE_BANDS) - 1)
    low, high = SIZE_BANDS[band]
    return low + (u * len(SIZE_BANDS) - band) * (high - low)


def _bounce(position: float, half: float) -> float:
    """Reflect a coordinate into [half, 1 - half] (the shape bounces off the walls)."""
    low, span = half, max(1e-6, 1.0 - 2 * half)
    phase = (position - low) % (2 * span)
    return low + (phase if phase <= span else 2 * span - phase)


def scene_at(scene: Scene, seconds: float) -> tuple[float, float, float]:
    """(x, y, size) of the shape at time ``seconds``."""
    size = scene.size * (1.0 + scene.pulse * math.sin(2 * math.pi * seconds / 1.5))
    half = size / 2
    return _bounce(scene.x + scene.vx * seconds, half), _bounce(scene.y + scene.vy * seconds, half), size


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.87, cy + r * 0.5), (cx - r * 0.87, cy + r * 0.5)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    t = r / 3
    return [
        (cx - t, cy - r),
        (cx + t, cy - r),
        (cx + t, cy - t),
        (cx + r, cy - t),
        (cx + r, cy + t),
        (cx + t, cy + t),
        (cx + t, cy + r),
        (cx - t, cy + r),
        (cx - t, cy + t),
        (cx - r, cy + t),
        (cx - r, cy - t),
        (cx - t, cy - t),
    ]


def draw_scene(scene: Scene, resolution: int, seconds: float = 0.0) -> Image.Image:
    """The scene at time ``seconds`` as an RGB image of ``resolution`` x ``resolution`` pixels."""
    canvas = resolution * SUPERSAMPLE
    image = Image.new("RGB", (canvas, canvas), COLORS[scene.background][1])
    draw = ImageDraw.Draw(image)
    x, y, size = scene_at(scene, seconds)
    cx, cy, r = x * canvas, y * canvas, size * canvas / 2
    fill = COLORS[scene.color][1]
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_outline(scene.shape, cx, cy, r), fill=fill)
    return image.resize((resolution, resolution), Image.Resampling.BOX)


POSITIONS: tuple[str, ...] = ("top left", "top", "top right", "left", "middle", "right",
                             "bottom left", "bottom", "bottom right")
SIZES: tuple[str, ...] = ("small", "medium", "large")  # "medium" is the caption without a size word
DIRECTIONS: tuple[str, ...] = ("left", "right")
# What a caption names, as one_attribute_variants keys them ("position" stands for a moving shape's direction).
CAPTION_ATTRIBUTES: tuple[str, ...] = ("color", "background", "shape", "position", "size")


NEAR_BELOW, FAR_ABOVE = 0.38, 0.62  # caption position thresholds (fractions of the frame): top/left, bottom/right
SMALL_BELOW, LARGE_ABOVE = 0.28, 0.38  # caption size thresholds on Scene.size


def place_of(x: float, y: float) -> str:
    """The caption's words for a centre at ``(x, y)`` (fractions of the frame): ``"top left"``, ``"bottom"``,
    ``"right"``, ..., or ``"middle"``."""
    vertical = "top" if y < NEAR_BELOW else "bottom" if y > FAR_ABOVE else ""
    horizontal = "left" if x < NEAR_BELOW else "right" if x > FAR_ABOVE else ""
    return " ".join(part for part in (vertical, horizontal) if part) or "middle"


def size_word(size: float) -> str:
    """The caption's size class of a shape ``size`` (fraction of the frame): small, medium or large."""
    return "small" if size < SMALL_BELOW else "large" if size > LARGE_ABOVE else "medium"


@dataclass(frozen=True)
class ToyCaption:
    """The attributes a toy-world caption states. Images have a position; videos a direction (and pulsing)."""

    color: str
    background: str
    shape: str
    size: str = "medium"
    position: str | None = None
    direction: str | None = None
    pulsing: bool = False

    @property
    def is_video(self) -> bool:
        return self.direction is not None

    def text(self) -> str:
        size = "" if self.size == "medium" else f"{self.size} "
        if self.direction is None:
            where = " in the middle" if self.position in (None, "middle") else f" at the {self.position}"
            what = f"{size}{self.color} {self.shape}{where}"
        else:
            what = f"{size}{self.color} {self.shape} moving {self.direction}{' and pulsing' if self.pulsing else ''}"
        return f"{_article(what)} {what} on {_article(self.background)} {self.background} background"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def caption_of(scene: Scene) -> str:
    """E.g. ``"a small red circle at the top left on a blue background"``; videos say how the shape moves."""
    return toy_caption_of(scene).text()


def toy_caption_of(scene: Scene) -> ToyCaption:
    color, background = COLORS[scene.color][0], COLORS[scene.background][0]
    common = {"color": color, "background": background, "shape": scene.shape, "size": size_word(scene.size)}
    if scene.vx == 0.0 and scene.vy == 0.0:
        return ToyCaption(**common, position=place_of(scene.x, scene.y))
    return ToyCaption(**common, direction="right" if scene.vx > 0 else "left", pulsing=scene.pulse > 0)


_COLOR_NAMES = "|".join(name for name, _ in COLORS)
_CAPTION = re.compile(
    rf"^an? (?:(?P<size>small|large) )?(?P<color>{_COLOR_NAMES}) (?P<shape>{'|'.join(SHAPES)})"
    rf"(?: at the (?P<position>{'|'.join(p for p in POSITIONS if p != 'middle')})| (?P<middle>in the middle)"
    r"| moving (?P<direction>left|right)(?P<pulsing> and pulsing)?)"
    rf" on an? (?P<background>{_COLOR_NAMES}) background$"
)


def parse_caption(caption: str) -> ToyCaption:
    """The attributes of a toy-world caption (also the older "a orange" spelling); ValueError otherwise."""
    match = _CAPTION.match(caption.strip())
    if match is None:
        raise ValueError(f"not a toy-world caption: {caption!r}")
    g = match.groupdict()
    position = g["position"] or ("middle" if g["middle"] else None)
    return ToyCaption(color=g["color"], background=g["background"], shape=g["shape"], size=g["size"] or "medium",
                      position=position, direction=g["direction"], pulsing=bool(g["pulsing"]))


def one_attribute_variants(caption: ToyCaption) -> dict[str, list[ToyCaption]]:
    """Every caption that differs from ``caption`` in exactly one attribute, by attribute (the zero-shot test
    and the hard negatives of CLIP training). Shape and background colour always differ from each other."""
    colors = [name for name, _ in COLORS]
    out = {
        "color": [replace(caption, color=c) for c in colors if c not in (caption.color, caption.background)],
        "background": [replace(caption, background=c) for c in colors if c not in (caption.color, caption.background)],
        "shape": [replace(caption, shape=s) for s in SHAPES if s != caption.shape],
        "size": [replace(caption, size=z) for z in SIZES if z != caption.size],
    }
    if caption.direction is None:
        out["position"] = [replace(caption, position=p) for p in POSITIONS if p != caption.position]
    else:
        out["direction"] = [replace(caption, direction=d) for d in DIRECTIONS if d != caption.direction]
    return out
