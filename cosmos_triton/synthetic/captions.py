"""Plain-English captions of scenes, phrased in varied ways, with phrasings held out of training.

A caption is composed from a `Scene` and a few phrasing choices (template, verb, direction wording, shape synonym,
whether the background and camera are mentioned). `caption_for` draws the choices from a RandomState; with
split="train" it only uses TRAIN_TEMPLATES, so the EVAL_TEMPLATES are phrasings the model never saw.
A panning camera is always mentioned; a static one only sometimes, so an unmentioned camera means a static one.
"""

from __future__ import annotations

import numpy as np

from cosmos_triton.synthetic.scenes import SPLITS, Scene

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond",),
}
DIRECTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left", "to the left", "leftward", "from right to left", "toward the left"),
    "right": ("right", "to the right", "rightward", "from left to right", "toward the right"),
    "up": ("up", "upward", "upwards", "from bottom to top", "toward the top"),
    "down": ("down", "downward", "downwards", "from top to bottom", "toward the bottom"),
}
MOVE_VERBS: tuple[tuple[str, str], ...] = (
    ("moving", "moves"), ("sliding", "slides"), ("gliding", "glides"), ("travelling", "travels"),
    ("drifting", "drifts"),
)
# (present participle, third person) per motion; {a} / {b} are the start / end colour of a recolouring
MOTION_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "bounce_horizontal": (("bouncing left and right", "bounces left and right"),
                          ("moving back and forth", "moves back and forth"),
                          ("bouncing from side to side", "bounces from side to side")),
    "bounce_vertical": (("bouncing up and down", "bounces up and down"),
                        ("hopping up and down", "hops up and down")),
    "grow": (("growing", "grows"), ("getting bigger", "gets bigger"), ("growing larger", "grows larger"),
             ("expanding", "expands")),
    "shrink": (("shrinking", "shrinks"), ("getting smaller", "gets smaller"), ("shrinking away", "shrinks away")),
    "recolour": (("changing color from {a} to {b}", "changes color from {a} to {b}"),
                 ("turning {b}", "turns {b}"),
                 ("slowly turning from {a} to {b}", "slowly turns from {a} to {b}")),
    "still": (("sitting still", "sits still"), ("staying in place", "stays in place"),
              ("resting without moving", "rests without moving")),
}
BACKGROUND_PHRASES: dict[str, tuple[str, ...]] = {
    "plain": ("on a plain background", "against a plain backdrop", "on a solid background"),
    "stripes": ("on a striped background", "over a background of stripes", "in front of stripes"),
    "checker": ("on a checkered background", "on a checkerboard"),
    "gradient": ("on a gradient background", "on a softly shaded background"),
}
CAMERA_PHRASES: dict[str, tuple[str, ...]] = {
    "pan_left": ("The camera pans left.", "The camera pans to the left.", "The view pans left."),
    "pan_right": ("The camera pans right.", "The camera pans to the right.", "The view pans right."),
    "static": ("The camera is static.", "The camera stays still."),
}
# {obj}: "a red circle", {the_obj}: "the red circle", {ving} / {vs}: the motion phrase, {bg}: " on a ..." or "".
TRAIN_TEMPLATES: tuple[str, ...] = (
    "{Obj} {ving}{bg}.",
    "{Obj} {vs}{bg}.",
    "A video of {obj} {ving}{bg}.",
    "There is {obj} {ving}{bg}.",
    "{The_obj} {vs}{bg}.",
    "In this clip, {obj} {vs}{bg}.",
    "We see {obj} {ving}{bg}.",
    "{Obj}{bg}, {ving}.",
)
EVAL_TEMPLATES: tuple[str, ...] = (  # held out: never used for training captions
    "Watch as {obj} {vs}{bg}.",
    "Here, {obj} keeps {ving}{bg}.",
)
BACKGROUND_MENTION_P = 0.65
STATIC_CAMERA_MENTION_P = 0.2


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def motion_phrase_options(scene: Scene) -> tuple[tuple[str, str], ...]:
    """Every (participle, third person) phrasing of the scene's motion."""
    if scene.motion == "move":
        assert scene.direction is not None, "a moving scene has a direction"
        return tuple((f"{ving} {d}", f"{vs} {d}") for ving, vs in MOVE_VERBS for d in DIRECTION_WORDS[scene.direction])
    key = f"bounce_{scene.direction}" if scene.motion == "bounce" else scene.motion
    return tuple((a.format(a=scene.colour, b=scene.colour_to), b.format(a=scene.colour, b=scene.colour_to))
                 for a, b in MOTION_PHRASES[key])


def compose_caption(scene: Scene, template: str, motion: tuple[str, str], shape_word: str,
                    background: str | None = None, camera: str | None = None) -> str:
    """Fill a template; `background` / `camera` are phrases (or None to leave them out)."""
    obj = f"{scene.colour} {shape_word}"
    text = template.format(obj=f"a {obj}", Obj=f"A {obj}", the_obj=f"the {obj}", The_obj=f"The {obj}",
                           ving=motion[0], vs=motion[1], bg=f" {background}" if background else "")
    return f"{text} {camera}" if camera else text


def caption_for(scene: Scene, rng: np.random.RandomState, split: str = "train") -> str:
    """A caption of the scene, the phrasing drawn from `rng`; split="eval" uses the held-out templates."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    templates = TRAIN_TEMPLATES if split == "train" else EVAL_TEMPLATES
    template = templates[rng.randint(len(templates))]
    options = motion_phrase_options(scene)
    motion = options[rng.randint(len(options))]
    words = SHAPE_WORDS[scene.shape]
    shape_word = words[rng.randint(len(words))]
    background = None
    if rng.uniform() < BACKGROUND_MENTION_P:
        phrases = BACKGROUND_PHRASES[scene.background]
        background = phrases[rng.randint(len(phrases))]
    camera = None
    if scene.camera != "static" or rng.uniform() < STATIC_CAMERA_MENTION_P:
        phrases = CAMERA_PHRASES[scene.camera]
        camera = phrases[rng.randint(len(phrases))]
    return compose_caption(scene, template, motion, shape_word, background, camera)


def canonical_caption(colour: str, shape: str, direction: str) -> str:
    """'A <colour> <shape> moving <direction>.': the first training template with the first choice of each phrase."""
    return f"A {colour} {shape} moving {direction}."


def eval_caption(colour: str, shape: str, direction: str, variant: int = 0) -> str:
    """The same content in a held-out phrasing (EVAL_TEMPLATES[variant]), plain direction word, no background."""
    return EVAL_TEMPLATES[variant % len(EVAL_TEMPLATES)].format(
        obj=f"a {colour} {shape}", Obj=f"A {colour} {shape}", the_obj=f"the {colour} {shape}",
        The_obj=f"The {colour} {shape}", ving=f"moving {direction}", vs=f"moves {direction}", bg="")
