"""Scene specifications of the procedural shape videos: what is in a clip and how it moves, as plain numbers.

A `Scene` is drawn from a seed with numpy's legacy `RandomState` (its stream is frozen across numpy versions, so
the same seed gives the same scene on every machine). Geometry is in units of the frame height, so one scene renders
at any resolution; `cosmos_triton.synthetic.render` turns scenes into pixels and `captions` into text.

Held out of training (never drawn with split="train"): the colour x motion pairs in `HELD_OUT_PAIRS`, so the
evaluation can ask for a colour with a motion the model never saw it do.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

# Saturated object colours, evenly spread in hue so that hue alone tells them apart (metrics.py classifies by it).
COLOUR_HUES: dict[str, float] = {"red": 0.0, "yellow": 55.0, "green": 120.0, "cyan": 185.0, "blue": 228.0,
                                 "purple": 285.0}
COLOURS: tuple[str, ...] = tuple(COLOUR_HUES)
OBJECT_SATURATION = 0.85
OBJECT_VALUE = 0.92
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
MOTIONS: tuple[str, ...] = ("move", "bounce", "grow", "shrink", "recolour", "still")
MOTION_WEIGHTS: tuple[float, ...] = (0.5, 0.12, 0.08, 0.08, 0.1, 0.12)
BOUNCE_AXES: tuple[str, ...] = ("horizontal", "vertical")
BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "checker", "gradient")
CAMERAS: tuple[str, ...] = ("static", "pan_left", "pan_right")
CAMERA_WEIGHTS: tuple[float, ...] = (0.7, 0.15, 0.15)
BACKGROUND_MAX_SATURATION = 0.18  # far below the metric's saturation floor, so backgrounds never count as a colour

# A colour never seen with a motion in training: each colour and each direction appears in at most one pair.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "move_up"), ("yellow", "move_left"), ("green", "move_down"), ("cyan", "move_right")}
)
SPLITS = ("train", "eval")


def hsv_to_rgb(h_degrees: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb((h_degrees % 360.0) / 360.0, s, v)


def colour_rgb(name: str) -> tuple[float, float, float]:
    """The rendered RGB (0..1) of a named object colour."""
    return hsv_to_rgb(COLOUR_HUES[name], OBJECT_SATURATION, OBJECT_VALUE)


@dataclass(frozen=True)
class Scene:
    """One clip. Positions are (x, y) in frame-height units from the top-left corner; `size` is the half-extent."""

    shape: str
    colour: str
    motion: str  # one of MOTIONS
    direction: str | None = None  # move: DIRECTIONS; bounce: BOUNCE_AXES
    colour_to: str | None = None  # recolour: the final colour
    start: tuple[float, float] = (0.8, 0.5)
    end: tuple[float, float] = (0.8, 0.5)  # move: where it ends; bounce: the far end of the swing
    size: float = 0.14
    size_to: float = 0.14  # grow / shrink
    cycles: float = 1.0  # bounce: number of back-and-forth swings
    background: str = "plain"
    bg_colour: tuple[float, float, float] = (0.3, 0.3, 0.3)
    bg_colour2: tuple[float, float, float] = (0.4, 0.4, 0.4)
    bg_period: float = 0.25  # stripes / checker cell size, in frame heights
    bg_angle: float = 0.0  # stripes / gradient orientation, radians
    camera: str = "static"
    camera_speed: float = 0.0  # frame heights over the whole clip
    aspect: float = 160 / 96  # width / height the geometry was laid out for
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def motion_key(self) -> str:
        """'move_left', ..., 'bounce', 'grow', 'shrink', 'recolour', 'still': what HELD_OUT_PAIRS refers to."""
        return f"move_{self.direction}" if self.motion == "move" else self.motion

    @property
    def held_out(self) -> bool:
        return (self.colour, self.motion_key) in HELD_OUT_PAIRS


def _muted_colour(rng: np.random.RandomState, v_lo: float, v_hi: float) -> tuple[float, float, float]:
    return hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0, BACKGROUND_MAX_SATURATION), rng.uniform(v_lo, v_hi))


def _background(rng: np.random.RandomState) -> dict:
    kind = BACKGROUNDS[rng.randint(len(BACKGROUNDS))]
    base = _muted_colour(rng, 0.12, 0.5)
    h, s, v = colorsys.rgb_to_hsv(*base)
    contrast = rng.uniform(0.1, 0.2) * (1 if v < 0.31 else -1)
    second = hsv_to_rgb(h * 360 + rng.uniform(-30, 30), min(s + rng.uniform(-0.05, 0.05), BACKGROUND_MAX_SATURATION)
                        if s > 0.05 else s, v + contrast)
    return dict(background=kind, bg_colour=base, bg_colour2=second, bg_period=float(rng.uniform(0.14, 0.35)),
                bg_angle=float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]) + rng.uniform(-0.1, 0.1)))


def _axis_range(size: float, extent: float, margin: float = 0.03) -> tuple[float, float]:
    return size + margin, extent - size - margin


def _move(rng: np.random.RandomState, direction: str, size: float, aspect: float) -> dict:
    horizontal = direction in ("left", "right")
    lo, hi = _axis_range(size, aspect if horizontal else 1.0)
    plo, phi = _axis_range(size, 1.0 if horizontal else aspect)
    a, b = lo + (hi - lo) * rng.uniform(0.0, 0.15), lo + (hi - lo) * rng.uniform(0.85, 1.0)
    if direction in ("left", "up"):
        a, b = b, a
    p = rng.uniform(plo, phi)
    start, end = ((a, p), (b, p)) if horizontal else ((p, a), (p, b))
    return dict(start=start, end=end)


def sample_scene(rng: np.random.RandomState, split: str = "train", aspect: float = 160 / 96) -> Scene:
    """Draw one scene. split="train" never yields a HELD_OUT_PAIRS combination; "eval" draws from everything."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    while True:
        scene = _sample_any(rng, aspect)
        if split == "eval" or not scene.held_out:
            return scene


def _sample_any(rng: np.random.RandomState, aspect: float) -> Scene:
    shape = SHAPES[rng.randint(len(SHAPES))]
    colour = COLOURS[rng.randint(len(COLOURS))]
    motion = MOTIONS[rng.choice(len(MOTIONS), p=np.asarray(MOTION_WEIGHTS) / sum(MOTION_WEIGHTS))]
    size = float(rng.uniform(0.11, 0.17))
    centre_lo, centre_hi = 0.3, aspect - 0.3
    centre = (float(rng.uniform(centre_lo, centre_hi)), float(rng.uniform(0.3, 0.7)))
    params: dict = dict(shape=shape, colour=colour, motion=motion, size=size, size_to=size, start=centre, end=centre,
                        aspect=aspect)
    if motion == "move":
        params["direction"] = DIRECTIONS[rng.randint(len(DIRECTIONS))]
        params.update(_move(rng, params["direction"], size, aspect))
    elif motion == "bounce":
        axis = BOUNCE_AXES[rng.randint(len(BOUNCE_AXES))]
        params["direction"] = axis
        lo, hi = _axis_range(size, aspect if axis == "horizontal" else 1.0)
        if axis == "horizontal":
            params["start"], params["end"] = (lo, centre[1]), (hi, centre[1])
        else:  # a ball bouncing on the floor: 'end' is the floor, 'start' the top of the bounce
            top = lo + (hi - lo) * rng.uniform(0.0, 0.3)
            params["start"], params["end"] = (centre[0], top), (centre[0], hi)
        params["cycles"] = float(rng.uniform(1.5, 3.0))
        params["extra"] = {"phase": float(rng.uniform(0, 1))}
    elif motion in ("grow", "shrink"):
        small, large = float(rng.uniform(0.07, 0.1)), float(rng.uniform(0.2, 0.26))
        params["size"], params["size_to"] = (small, large) if motion == "grow" else (large, small)
        params["start"] = params["end"] = (float(rng.uniform(0.35, aspect - 0.35)), float(rng.uniform(0.35, 0.65)))
    elif motion == "recolour":
        others = [c for c in COLOURS if c != colour]
        params["colour_to"] = others[rng.randint(len(others))]
    params.update(_background(rng))
    camera = CAMERAS[rng.choice(len(CAMERAS), p=np.asarray(CAMERA_WEIGHTS) / sum(CAMERA_WEIGHTS))]
    params["camera"] = camera
    if camera != "static":
        # slower than any object motion, so an object's on-screen direction is still the one its caption names
        params["camera_speed"] = float(rng.uniform(0.1, 0.2))
    return Scene(**params)


def scene_rng(seed: int, index: int) -> np.random.RandomState:
    """The generator of clip `index` of the data set with base `seed` (legacy seeding: frozen across versions)."""
    return np.random.RandomState([seed % 2**32, index % 2**32])


def oracle_scene(colour: str, shape: str, direction: str, seed: int = 0, aspect: float = 160 / 96,
                 background: str = "plain") -> Scene:
    """A static-camera scene of `a <colour> <shape> moving <direction>`: the evaluation's ground truth and the
    Video2World test's input."""
    rng = np.random.RandomState([seed % 2**32, 7])
    size = 0.14
    bg = _background(rng)
    bg["background"] = background
    return Scene(shape=shape, colour=colour, motion="move", direction=direction, size=size, size_to=size,
                 aspect=aspect, camera="static", **_move(rng, direction, size, aspect), **bg)

