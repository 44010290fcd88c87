"""Camera-like training images of the item icons, made on the fly (numpy + Pillow, no files).

The recognizer is for a phone pointed at a monitor: the icon is pixel art drawn at an integer
scale by the game, then photographed, so it arrives shifted, slightly rotated, in perspective,
blurred, with moiré from the screen's pixel grid, a colour cast, glare, noise and JPEG blocks.
The original workflow trained on clean pastes and tested on its own training images; here every
sample goes through that whole chain, and validation and test use backgrounds training never saw.

Determinism: sample ``i`` of a split is a pure function of (seed, split, i). Its random numbers
come from ``numpy.random.default_rng([seed, split code, i])``, so any worker, order or process
gives the same pixels, and a checkpoint resumed mid-run sees the same data as an unbroken run.

Backgrounds are split by a fixed rule, never by chance at run time:

* the 12 captured room backgrounds: two for validation, two for test, the rest for training
  (``FIXTURE_BACKGROUND_SPLIT``; a file not named there goes where the hash of its name says);
* procedural backgrounds (floor-like value noise, bricks, tiles, rocks, gradients, dark screens)
  are each made from one integer seed, and a seed belongs to the split ``seed % 10`` says (0-7
  train, 8 validation, 9 test), so no two splits can draw the same one.

Scenes for ``locate`` are the same chain applied to a whole room with 3-8 items at one scale.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from models.isaac.icons import FIXTURES_DIR, ICON_SIZE, IconSet, load_background

SPLITS = ("train", "val", "test")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SCENE_STREAM = 7  # a separate random stream for scenes, so scene i and crop i share no numbers
# The captured backgrounds kept away from training: each held-out pair has a training sibling of
# the same kind of floor (dark, brown, pink with blood, rocks), so the held-out sets test new
# pictures of known floors rather than a floor type never shown.
FIXTURE_BACKGROUND_SPLIT = {
    **{f"bg_{n:05d}.png": "train" for n in (1, 2, 4, 6, 7, 8, 10, 12)},
    "bg_00003.png": "val", "bg_00009.png": "val",
    "bg_00005.png": "test", "bg_00011.png": "test",
}
PROCEDURAL_SPLIT_RESIDUES = {"train": range(0, 8), "val": range(8, 9), "test": range(9, 10)}
BACKGROUND_DIR = FIXTURES_DIR / "backgrounds"
FIXTURE_SHARE = 0.5  # of backgrounds drawn from the captured pictures (when the split has any)


def fixture_split(name: str) -> str:
    """The split a captured background belongs to: the table above, else a stable hash of its name."""
    if name in FIXTURE_BACKGROUND_SPLIT:
        return FIXTURE_BACKGROUND_SPLIT[name]
    bucket = hashlib.sha256(name.encode()).digest()[0] % 6
    return "val" if bucket == 4 else "test" if bucket == 5 else "train"


def procedural_split(background_seed: int) -> str:
    residue = background_seed % 10
    return next(split for split, residues in PROCEDURAL_SPLIT_RESIDUES.items() if residue in residues)


@dataclass(frozen=True)
class Camera:
    """How hard the photograph is; the defaults are what the recognizer is trained and measured on."""

    integer_scale_share: float = 0.5  # the game draws at integer scales; screenshots resized are not
    scale_range: tuple[float, float] = (0.9, 4.0)  # icon pixels per sheet pixel
    margin_range: tuple[float, float] = (1.0, 1.5)  # crop side / icon side (how loosely it is cropped)
    shift: float = 0.08  # of the icon side the icon may stick out of the crop
    rotation_deg: float = 8.0
    perspective: float = 0.06  # corner displacement, of the crop side
    neighbour_share: float = 0.2  # a neighbouring item peeks in at an edge
    blur_share: float = 0.6
    blur_radius: tuple[float, float] = (0.3, 1.3)  # px at the output size 64
    moire_share: float = 0.4
    glare_share: float = 0.25
    noise_share: float = 0.7
    noise_sigma: tuple[float, float] = (1.0, 10.0)
    jpeg_share: float = 0.7
    jpeg_quality: tuple[int, int] = (35, 95)
    brightness: tuple[float, float] = (0.65, 1.35)
    contrast: tuple[float, float] = (0.65, 1.3)
    gamma: tuple[float, float] = (0.75, 1.35)
    colour_cast: float = 0.08  # sigma of log per-channel gain


CLEAN = Camera(
    integer_scale_share=1.0, scale_range=(2.0, 2.0), margin_range=(1.25, 1.25), shift=0.0, rotation_deg=0.0,
    perspective=0.0, neighbour_share=0.0, blur_share=0.0, moire_share=0.0, glare_share=0.0, noise_share=0.0,
    jpeg_share=0.0, brightness=(1.0, 1.0), contrast=(1.0, 1.0), gamma=(1.0, 1.0), colour_cast=0.0,
)


# --------------------------------------------------------------------------- backgrounds


@dataclass
class Backgrounds:
    """The captured backgrounds by split, and the procedural ones, drawn at any size."""

    fixtures: dict[str, list[np.ndarray]] = field(default_factory=lambda: {split: [] for split in SPLITS}, repr=False)
    names: dict[str, list[str]] = field(default_factory=lambda: {split: [] for split in SPLITS})

    @classmethod
    def load(cls, folder: str | Path | None = BACKGROUND_DIR) -> Backgrounds:
        """The captured backgrounds under ``folder`` (none when it is None or missing: procedural only)."""
        backgrounds = cls()
        if folder is not None and Path(folder).is_dir():
            for path in sorted(Path(folder).glob("*.png")):
                split = fixture_split(path.name)
                backgrounds.fixtures[split].append(load_background(path))
                backgrounds.names[split].append(path.name)
        return backgrounds

    def draw(self, rng: np.random.Generator, split: str, width: int, height: int, scale: float) -> tuple[np.ndarray, str]:
        """A ``height``×``width`` RGB background for ``split`` and the name of where it came from.

        ``scale`` is the icons' scale, so floor textures grow with the items drawn on them.
        """
        if self.fixtures[split] and rng.random() < FIXTURE_SHARE:
            index = int(rng.integers(len(self.fixtures[split])))
            return fixture_patch(self.fixtures[split][index], rng, width, height, scale), self.names[split][index]
        residues = PROCEDURAL_SPLIT_RESIDUES[split]
        background_seed = int(rng.integers(1 << 28)) * 10 + int(residues[int(rng.integers(len(residues)))])
        return procedural_background(background_seed, width, height, scale), f"procedural:{background_seed}"


def fixture_patch(picture: np.ndarray, rng: np.random.Generator, width: int, height: int, scale: float) -> np.ndarray:
    """A random, randomly flipped and turned window of a captured background, at about the icons' scale."""
    if rng.random() < 0.5:
        picture = picture[:, ::-1]
    picture = np.rot90(picture, int(rng.integers(4)))
    zoom = scale * math.exp(rng.uniform(-0.35, 0.35))
    need_w, need_h = max(2, math.ceil(width / zoom)), max(2, math.ceil(height / zoom))
    ph, pw = picture.shape[:2]
    if need_w > pw or need_h > ph:  # mirror-tile a small picture up to the window's size
        reps_y, reps_x = -(-need_h // ph) + 1, -(-need_w // pw) + 1
        strip = np.concatenate([picture if x % 2 == 0 else picture[:, ::-1] for x in range(reps_x)], axis=1)
        picture = np.concatenate([strip if y % 2 == 0 else strip[::-1] for y in range(reps_y)], axis=0)
        ph, pw = picture.shape[:2]
    x0, y0 = int(rng.integers(pw - need_w + 1)), int(rng.integers(ph - need_h + 1))
    window = Image.fromarray(np.ascontiguousarray(picture[y0:y0 + need_h, x0:x0 + need_w]))
    resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    return np.asarray(window.resize((width, height), resample), dtype=np.uint8)


def _value_noise(rng: np.random.Generator, width: int, height: int, cell: float) -> np.ndarray:
    """Smooth random field in 0..1: a coarse random grid enlarged bicubically."""
    grid_w, grid_h = max(2, int(width / cell) + 2), max(2, int(height / cell) + 2)
    coarse = Image.fromarray((rng.random((grid_h, grid_w)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def _palette_colour(rng: np.random.Generator) -> np.ndarray:
    """A floor-like colour: mostly browns, reds, greys and near-blacks, sometimes anything."""
    family = rng.random()
    if family < 0.3:  # browns / basement
        base = np.array([rng.uniform(70, 150), rng.uniform(45, 100), rng.uniform(25, 70)])
    elif family < 0.5:  # reddish / womb
        base = np.array([rng.uniform(90, 180), rng.uniform(30, 90), rng.uniform(30, 80)])
    elif family < 0.75:  # greys / caves / dark rooms
        level = rng.uniform(15, 120)
        base = level + rng.uniform(-12, 12, 3)
    else:
        base = rng.uniform(0, 255, 3)
    return np.clip(base, 0, 255)


def procedural_background(background_seed: int, width: int, height: int, scale: float = 2.0) -> np.ndarray:
    """One procedural background, a pure function of its seed and size: floors, bricks, tiles, rocks."""
    rng = np.random.default_rng(background_seed)
    kind = int(rng.integers(6))
    base = _palette_colour(rng)
    other = np.clip(base * rng.uniform(0.5, 1.3) + rng.uniform(-30, 30, 3), 0, 255)
    texture_cell = max(2.0, scale * rng.uniform(3, 24))
    noise = _value_noise(rng, width, height, texture_cell)[..., None]
    if kind == 0:  # mottled floor
        image = base + (noise - 0.5) * rng.uniform(20, 90)
    elif kind == 1:  # two-colour blend
        image = base * (1 - noise) + other * noise
    elif kind == 2:  # bricks or tiles: a grid of mortar lines
        image = base + (noise - 0.5) * rng.uniform(10, 50)
        canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        tile_w, tile_h = max(6, int(scale * rng.uniform(10, 40))), max(6, int(scale * rng.uniform(8, 30)))
        line = tuple(int(v) for v in np.clip(base * rng.uniform(0.4, 0.8), 0, 255))
        thickness = max(1, int(round(scale * rng.uniform(0.5, 2))))
        stagger = rng.random() < 0.5
        for row, y in enumerate(range(int(-rng.integers(tile_h)), height, tile_h)):
            draw.line([(0, y), (width, y)], fill=line, width=thickness)
            offset = (tile_w // 2) * (row % 2) if stagger else 0
            for x in range(int(-rng.integers(tile_w)) + offset, width, tile_w):
                draw.line([(x, y), (x, y + tile_h)], fill=line, width=thickness)
        image = np.asarray(canvas, dtype=np.float32)
    elif kind == 3:  # rocks and stains: outlined blobs
        image = base + (noise - 0.5) * rng.uniform(10, 40)
        canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 8))):
            radius = scale * rng.uniform(5, 30)
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            fill = tuple(int(v) for v in np.clip(other + rng.uniform(-25, 25, 3), 0, 255))
            outline = tuple(int(v) for v in np.clip(np.minimum(base, other) * 0.4, 0, 255))
            box = [cx - radius, cy - radius * rng.uniform(0.6, 1.0), cx + radius, cy + radius * rng.uniform(0.6, 1.0)]
            draw.ellipse(box, fill=fill, outline=outline, width=max(1, int(scale)))
        image = np.asarray(canvas, dtype=np.float32)
    elif kind == 4:  # gradient (lit room, menu)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = _grid(height, width)
        ramp = (xs * math.cos(angle) + ys * math.sin(angle))
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
        image = base * (1 - ramp[..., None]) + other * ramp[..., None] + (noise - 0.5) * 20
    else:  # dark screen with faint texture
        image = base * 0.25 + (noise - 0.5) * rng.uniform(5, 25)
    return np.clip(image, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the camera


def perspective_coefficients(output_corners: np.ndarray, source_corners: np.ndarray) -> tuple[float, ...]:
    """Pillow's 8 PERSPECTIVE coefficients mapping output pixels to source pixels (4 point pairs)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(output_corners, source_corners):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return tuple(np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64)).tolist())


def apply_homography(coefficients: Sequence[float], points: np.ndarray) -> np.ndarray:
    """Source→output mapping is the inverse of Pillow's; this maps output points to source points."""
    a, b, c, d, e, f, g, h = coefficients
    x, y = points[:, 0], points[:, 1]
    w = g * x + h * y + 1
    return np.stack([(a * x + b * y + c) / w, (d * x + e * y + f) / w], axis=1)


def camera_quad(rng: np.random.Generator, camera: Camera, left: float, top: float, side_w: float, side_h: float) -> np.ndarray:
    """Where the output frame's corners land in the scene: rotated, zoomed a little, in perspective."""
    theta = math.radians(float(np.clip(rng.normal(0, camera.rotation_deg / 2), -camera.rotation_deg, camera.rotation_deg)))
    cx, cy = left + side_w / 2, top + side_h / 2
    half = np.array([[-side_w, -side_h], [side_w, -side_h], [side_w, side_h], [-side_w, side_h]]) / 2
    half = half * math.exp(rng.uniform(-0.05, 0.05))
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    corners = half @ rotation.T + [cx, cy]
    jitter = rng.uniform(-1, 1, (4, 2)) * camera.perspective * np.array([side_w, side_h])
    return corners + jitter  # upper-left, upper-right, lower-right, lower-left


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return ys, xs


def moire(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A multiplicative interference pattern, a little different per channel (a screen's subpixels)."""
    ys, xs = _grid(height, width)
    pattern = np.ones((height, width, 3), dtype=np.float32)
    for _ in range(int(rng.integers(1, 3))):
        frequency = rng.uniform(0.08, 0.45)
        angle = rng.uniform(0, math.pi)
        amplitude = rng.uniform(0.03, 0.12)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi * frequency)
        shifts = (rng.uniform(0, 2 * math.pi) + np.array([0.0, 2.1, 4.2]) * rng.uniform(0, 1)).astype(np.float32)
        pattern *= 1 + amplitude * np.sin(phase[..., None] + shifts)
    return pattern


def glare(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A soft additive reflection of a lamp or a window, slightly tinted."""
    ys, xs = _grid(height, width)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    sigma = rng.uniform(0.2, 0.6) * max(width, height)
    blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma))
    tint = (rng.uniform(0.1, 0.45) * 255 * rng.uniform(0.85, 1.0, 3)).astype(np.float32)
    return blob[..., None] * tint


def tone_tables(rng: np.random.Generator, camera: Camera, mean: float) -> np.ndarray:
    """Exposure, contrast, colour cast and gamma as one 256-entry table per channel (3, 256) uint8."""
    limit = 2.5 * camera.colour_cast
    gains = np.exp(np.clip(rng.normal(0, camera.colour_cast, 3), -limit, limit))
    brightness, contrast, gamma = rng.uniform(*camera.brightness), rng.uniform(*camera.contrast), rng.uniform(*camera.gamma)
    levels = np.arange(256, dtype=np.float64)
    toned = ((levels - mean) * contrast + mean) * brightness
    tables = np.clip(toned[None, :] * gains[:, None], 0, 255) / 255.0
    return np.clip(255.0 * np.power(tables, gamma) + 0.5, 0, 255).astype(np.uint8)


def photograph(image: Image.Image, rng: np.random.Generator, camera: Camera, output_scale: float = 1.0) -> np.ndarray:
    """Blur, moiré, glare, exposure, colour cast, noise and JPEG on an RGB picture.

    ``output_scale`` is the picture's size over 64 px, so blur keeps its look at any size.
    """
    if rng.random() < camera.blur_share:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*camera.blur_radius) * output_scale))
    pixels = np.asarray(image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    with_moire, with_glare = rng.random() < camera.moire_share, rng.random() < camera.glare_share
    if with_moire or with_glare:
        light = pixels.astype(np.float32)
        if with_moire:
            light *= moire(rng, height, width)
        if with_glare:
            light += glare(rng, height, width)
        pixels = np.clip(light + 0.5, 0, 255).astype(np.uint8)
    tables = tone_tables(rng, camera, float(pixels.mean()))
    pixels = np.stack([tables[channel][pixels[..., channel]] for channel in range(3)], axis=-1)
    if rng.random() < camera.noise_share:
        sigma = rng.uniform(*camera.noise_sigma)
        shape = (height, width, 1) if rng.random() < 0.5 else (height, width, 3)
        noisy = pixels.astype(np.float32) + rng.standard_normal(shape, dtype=np.float32) * sigma
        pixels = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < camera.jpeg_share:
        buffer = io.BytesIO()
        quality = int(rng.integers(camera.jpeg_quality[0], camera.jpeg_quality[1] + 1))
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            pixels = np.asarray(decoded.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(pixels)


def draw_scale(rng: np.random.Generator, camera: Camera) -> tuple[float, bool]:
    """The icons' scale and whether it is an integer one (drawn with nearest-neighbour, as the game does)."""
    low, high = camera.scale_range
    if rng.random() < camera.integer_scale_share:
        choices = [s for s in range(max(1, math.ceil(low)), math.floor(high) + 1)] or [max(1, round(low))]
        return float(choices[int(rng.integers(len(choices)))]), True
    return float(rng.uniform(low, high)), False


def scaled_icon(icon: np.ndarray, size: int, rng: np.random.Generator, integer: bool) -> Image.Image:
    resample = Image.Resampling.NEAREST if integer or rng.random() < 0.5 else Image.Resampling.BILINEAR
    return Image.fromarray(icon).resize((size, size), resample)


# --------------------------------------------------------------------------- one crop


def render_crop(
    icons: np.ndarray,
    label: int | None,
    rng: np.random.Generator,
    backgrounds: Backgrounds,
    split: str,
    size: int = 64,
    camera: Camera = Camera(),
) -> np.ndarray:
    """A ``size``×``size`` RGB photo-like crop of icon ``label`` (None: of no item, a negative).

    The screen is drawn at the game's scale, but a big one is built already box-filtered down to
    about 1.5× the output (a sensor integrates; building 300 px to keep 64 would waste the time).
    """
    scale, integer = draw_scale(rng, camera)
    full_side = max(8, round(ICON_SIZE * scale))
    margin = rng.uniform(*camera.margin_range)
    reduce = max(1, math.ceil(full_side * margin / (size * 1.5)))
    side = max(4, round(full_side / reduce))
    crop = max(side, round(side * margin))
    border = round(crop * 0.35)  # room for rotation and perspective to look outside the crop
    canvas_size = crop + 2 * border
    background, _ = backgrounds.draw(rng, split, canvas_size, canvas_size, scale / reduce)
    scene = Image.fromarray(background)
    stick_out = camera.shift * side
    x = border + rng.uniform(-stick_out, crop - side + stick_out)
    y = border + rng.uniform(-stick_out, crop - side + stick_out)
    if rng.random() < camera.neighbour_share or label is None:
        icon = screen_icon(icons[_other_label(rng, len(icons), label)], full_side, reduce, rng, integer)
        _paste_neighbour(scene, icon, rng, label is None, (border, crop))
    if label is not None:
        icon = screen_icon(icons[label], full_side, reduce, rng, integer)
        scene.paste(icon, (round(x), round(y)), icon)
    quad = camera_quad(rng, camera, border, border, crop, crop)
    frame = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    coefficients = perspective_coefficients(frame, quad)
    photo = scene.transform((size, size), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR)
    return photograph(photo, rng, camera, size / 64)


def screen_icon(icon: np.ndarray, side: int, reduce: int, rng: np.random.Generator, integer: bool) -> Image.Image:
    """The icon as the screen shows it at ``side`` px, then box-filtered by ``reduce``."""
    shown = scaled_icon(icon, side, rng, integer)
    return shown.reduce(reduce) if reduce > 1 else shown


def _other_label(rng: np.random.Generator, count: int, label: int | None) -> int:
    other = int(rng.integers(count))
    while label is not None and count > 1 and other == label:
        other = int(rng.integers(count))
    return other


def _paste_neighbour(
    scene: Image.Image, icon: Image.Image, rng: np.random.Generator, negative: bool, crop_at: tuple[int, int],
) -> None:
    """Another item just outside the crop, showing at most a quarter of itself at one edge.

    For a negative it may show up to half of itself, so that "no item" means no item *centred*
    here, not "nothing at all".
    """
    border, crop = crop_at
    side = icon.width
    visible = rng.uniform(0.05, 0.5 if negative else 0.25) * side
    along = border + rng.uniform(-0.3 * side, crop - 0.7 * side)
    edge = int(rng.integers(4))
    if edge == 0:  # left
        x, y = border + visible - side, along
    elif edge == 1:  # right
        x, y = border + crop - visible, along
    elif edge == 2:  # top
        x, y = along, border + visible - side
    else:
        x, y = along, border + crop - visible
    scene.paste(icon, (round(x), round(y)), icon)


# --------------------------------------------------------------------------- the dataset


class SyntheticIcons(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Photo-like crops of the icons, made on demand: item ``i`` depends only on (seed, split, i).

    Labels cycle through the classes (``i % classes``), so any run of ``k × classes`` items is
    balanced. With ``negative_every`` N, every N-th item is a crop with no item centred in it,
    labelled ``len(icons)`` (the "no item" class that ``locate`` and ``identify`` use).
    Items are ``(uint8 tensor 3×size×size, label)``; the network scales pixels itself.
    """

    def __init__(
        self,
        icons: IconSet | np.ndarray,
        split: str = "train",
        *,
        seed: int = 0,
        length: int = 100_000,
        size: int = 64,
        backgrounds: Backgrounds | None = None,
        camera: Camera = Camera(),
        negative_every: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.icons = icons.pixels if isinstance(icons, IconSet) else np.asarray(icons)
        self.split, self.seed, self.length, self.size = split, seed, length, size
        self.backgrounds = backgrounds if backgrounds is not None else Backgrounds.load()
        self.camera, self.negative_every = camera, negative_every

    @property
    def classes(self) -> int:
        return len(self.icons)

    def __len__(self) -> int:
        return self.length

    def label(self, index: int) -> int:
        """The class of item ``index``: ``classes`` (no item) for the negatives."""
        every = self.negative_every
        if every and index % every == every - 1:
            return self.classes
        return (index - (index // every if every else 0)) % self.classes

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_CODES[self.split], index])

    def image(self, index: int) -> np.ndarray:
        label = self.label(index)
        return render_crop(
            self.icons, None if label == self.classes else label, self.rng(index), self.backgrounds, self.split,
            self.size, self.camera,
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return torch.from_numpy(self.image(index).copy()).permute(2, 0, 1).contiguous(), self.label(index)


# --------------------------------------------------------------------------- scenes for locate


@dataclass(frozen=True)
class Scene:
    """A photographed room with items: the picture, and each item's box (x0, y0, x1, y1) and class."""

    image: np.ndarray  # H×W×3 uint8
    boxes: np.ndarray  # (n, 4) float, output pixels
    labels: np.ndarray  # (n,) int
    background: str


def _visible_box(icon: np.ndarray) -> tuple[int, int, int, int]:
    """The icon's drawn pixels (alpha > 0) in sheet pixels: the box a detector should draw."""
    ys, xs = np.nonzero(icon[..., 3])
    if len(xs) == 0:
        return 0, 0, ICON_SIZE, ICON_SIZE
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


SCENE_CAMERA = Camera(rotation_deg=5.0, perspective=0.04, blur_radius=(0.3, 1.0), neighbour_share=0.0)


def render_scene(
    icons: np.ndarray,
    rng: np.random.Generator,
    backgrounds: Backgrounds,
    split: str,
    *,
    items: tuple[int, int] = (3, 8),
    size: tuple[int, int] | None = None,
    icon_px: tuple[float, float] = (28.0, 72.0),
    camera: Camera = SCENE_CAMERA,
) -> Scene:
    """A whole screenshot or photo with ``items`` distinct items at one scale, none overlapping.

    The scene is laid out on a grid of cells (one item at most per cell, jittered inside it), so
    items never overlap but may touch. Output size is ``size`` (W, H) or drawn from 256-480 wide.
    """
    width, height = size or (int(rng.integers(256, 481)), 0)
    if not height:
        height = int(width * rng.uniform(0.56, 0.8))
    icon_size = rng.uniform(*icon_px)
    integer = rng.random() < camera.integer_scale_share
    if integer:  # the game's own scale: whole pixels, drawn with nearest-neighbour
        icon_size = max(1, round(icon_size / ICON_SIZE)) * ICON_SIZE
    side = max(12, round(icon_size))
    count = min(int(rng.integers(items[0], items[1] + 1)), len(icons))
    spacing = rng.uniform(1.25, 1.8)
    inset = 0.05 * min(width, height)  # keeps items inside the frame after the camera's tilt
    inner_w, inner_h = width - 2 * inset, height - 2 * inset
    while True:  # a small picture gets smaller items rather than fewer
        cell = side * spacing
        columns, rows = max(1, int(inner_w // cell)), max(1, int(inner_h // cell))
        if columns * rows >= count or side <= 12:
            break
        side = max(12, round(side * 0.9))
        integer = integer and side % ICON_SIZE == 0
    count = min(count, columns * rows)
    border = round(0.1 * max(width, height))
    canvas_w, canvas_h = width + 2 * border, height + 2 * border
    background, name = backgrounds.draw(rng, split, canvas_w, canvas_h, side / ICON_SIZE)
    scene = Image.fromarray(background)
    cells = rng.choice(columns * rows, size=count, replace=False)
    labels = rng.choice(len(icons), size=count, replace=False)
    boxes = []
    cell_w, cell_h = inner_w / columns, inner_h / rows
    for cell_index, label in zip(cells, labels):
        cx, cy = cell_index % columns, cell_index // columns
        x = border + inset + cx * cell_w + rng.uniform(0, max(0.0, cell_w - side))
        y = border + inset + cy * cell_h + rng.uniform(0, max(0.0, cell_h - side))
        icon = scaled_icon(icons[label], side, rng, integer)
        scene.paste(icon, (round(x), round(y)), icon)
        vx0, vy0, vx1, vy1 = _visible_box(icons[label])
        unit = side / ICON_SIZE
        boxes.append([round(x) + vx0 * unit, round(y) + vy0 * unit, round(x) + vx1 * unit, round(y) + vy1 * unit])
    quad = camera_quad(rng, camera, border, border, width, height)
    frame = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    coefficients = perspective_coefficients(frame, quad)
    photo = scene.transform((width, height), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR)
    inverse = perspective_coefficients(quad, frame)  # scene → output
    out_boxes = []
    for x0, y0, x1, y1 in boxes:
        corners = apply_homography(inverse, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))
        (bx0, by0), (bx1, by1) = corners.min(axis=0), corners.max(axis=0)
        out_boxes.append([max(0.0, bx0), max(0.0, by0), min(float(width), bx1), min(float(height), by1)])
    image = photograph(photo, rng, camera, output_scale=side / 48)
    return Scene(image, np.asarray(out_boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64), name)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODES[split], SCENE_STREAM, index])


# --------------------------------------------------------------------------- preview


def preview_grid(dataset: SyntheticIcons, count: int = 64, columns: int = 8, zoom: int = 2, start: int = 0) -> Image.Image:
    """``count`` consecutive items side by side, each labelled with its class index: a look at the data."""
    tile = dataset.size * zoom
    rows = -(-count // columns)
    grid = Image.new("RGB", (columns * tile, rows * (tile + 12)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for position in range(count):
        index = start + position
        picture = Image.fromarray(dataset.image(index)).resize((tile, tile), Image.Resampling.NEAREST)
        x, y = (position % columns) * tile, (position // columns) * (tile + 12)
        grid.paste(picture, (x, y))
        label = dataset.label(index)
        draw.text((x + 2, y + tile), "none" if label == dataset.classes else str(label), fill=(0, 0, 0))
    return grid


def preview_scenes(icons: np.ndarray, backgrounds: Backgrounds, split: str, seed: int, count: int = 4,
                   start: int = 0, columns: int = 2) -> Image.Image:
    """``count`` scenes with their true boxes drawn in green: a look at what ``locate`` is measured on."""
    scenes = [render_scene(icons, scene_rng(seed, split, start + k), backgrounds, split) for k in range(count)]
    cell_w = max(scene.image.shape[1] for scene in scenes)
    cell_h = max(scene.image.shape[0] for scene in scenes)
    rows = -(-count // columns)
    grid = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    for position, scene in enumerate(scenes):
        picture = Image.fromarray(scene.image)
        draw = ImageDraw.Draw(picture)
        for box, label in zip(scene.boxes, scene.labels):
            draw.rectangle([float(v) for v in box], outline=(0, 255, 0))
            draw.text((float(box[0]), float(box[3]) + 1), str(int(label)), fill=(0, 255, 0))
        grid.paste(picture, ((position % columns) * cell_w, (position // columns) * cell_h))
    return grid
