"""Seeded synthetic region data: images of several shapes with exact masks, boxes and captions.

Each image has a muted, noisy gradient background and 2-5 objects (shape, colour, size, texture,
position, small rotation), drawn in order so later ones may overlap earlier ones; every object stays
at least ``min_visible`` visible. An object's mask is exactly the set of pixels painted with it
(images are PNG, lossless), its box the mask's pixel-edge box. Two flavours:

- ``weak``: the caption is the category, like weak supervision from detection data (paper.md §3);
  task "recognition" by default. ``categories`` picks the vocabulary: "shape" (8 names) or
  "colour-shape" (80 names such as "red circle").
- ``captions``: several full sentences per region whose right answer depends on the region and its
  context (attributes, place, nearest neighbour, occlusion, rank among same shapes; see
  ``synthetic_captions``); task "caption".

Image ``(split, index)`` is drawn from ``np.random.default_rng([seed, crc32(split), index])``: the
same seed gives the same bytes, and growing a split keeps its first images unchanged.

Training on the captions flavour: its captions name sides and places, so flip with
``TransformConfig(flip_text="swap-left-right")``, and keep ``scale_range`` at most 1 (e.g. 0.5-1.0)
if stated places and neighbours must stay in view (a jitter scale above 1 crops the scene).
"""

from __future__ import annotations

import os
import shutil
import zlib
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sca.data.io import write_manifest, write_records
from sca.data.masks import mask_to_box, points_in_polygon, rle_encode
from sca.data.records import ImageRecord, Region
from sca.data.synthetic_captions import SceneObject, place, region_phrases

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "heart")
COLOURS = {
    "red": (215, 35, 35), "green": (35, 160, 60), "blue": (35, 75, 215), "yellow": (240, 210, 30),
    "orange": (245, 135, 25), "purple": (135, 55, 185), "pink": (245, 125, 190), "cyan": (30, 200, 215),
    "white": (250, 250, 250), "black": (20, 20, 20),
}
SIZES = {"small": (0.07, 0.10), "medium": (0.12, 0.16), "large": (0.19, 0.24)}  # radius / shorter side
TEXTURES = ("plain", "striped", "dotted", "checkered")
BACKGROUNDS = ((185, 178, 165), (158, 168, 178), (168, 182, 160), (196, 192, 186), (150, 146, 156))
FLAVOURS = ("captions", "weak")
CATEGORIES = ("shape", "colour-shape")  # vocabularies of the weak flavour's category names

__all__ = ["CATEGORIES", "COLOURS", "FLAVOURS", "SHAPES", "SIZES", "TEXTURES", "SyntheticConfig", "generate_synthetic",
           "render_scene", "synthetic_image"]


@dataclass
class SyntheticConfig:
    """flavour: "captions" or "weak". splits: images per split. image_size: (min, max) side, drawn
    per axis. objects: (min, max) per image. min_visible: least visible fraction of any object.
    phrases: references per region (captions flavour). overlap: chance an object is placed touching
    an earlier one. task: region task (default: "caption" for captions, "recognition" for weak).
    categories: the weak flavour's category vocabulary, "shape" ("circle") or "colour-shape"
    ("red circle"); the captions flavour's ``category`` is always the shape."""

    flavour: str = "captions"
    seed: int = 0
    splits: dict[str, int] = field(default_factory=lambda: {"train": 200, "val": 20, "test": 20})
    image_size: tuple[int, int] = (96, 160)
    objects: tuple[int, int] = (2, 5)
    min_visible: float = 0.5
    phrases: int = 3
    overlap: float = 0.35
    task: str | None = None
    categories: str = "shape"

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"SyntheticConfig.flavour {self.flavour!r} is not one of {FLAVOURS}")
        if self.categories not in CATEGORIES:
            raise ValueError(f"SyntheticConfig.categories {self.categories!r} is not one of {CATEGORIES}")
        lo, hi = self.image_size
        if not 32 <= lo <= hi:
            raise ValueError(f"SyntheticConfig.image_size must be 32 <= min <= max, got {self.image_size!r}")
        lo, hi = self.objects
        if not 1 <= lo <= hi <= len(SHAPES):
            raise ValueError(f"SyntheticConfig.objects must be 1 <= min <= max <= {len(SHAPES)}, got {self.objects!r}")
        if any(n < 0 for n in self.splits.values()):
            raise ValueError(f"SyntheticConfig.splits sizes must be >= 0, got {self.splits!r}")

    @property
    def source(self) -> str:
        return f"synthetic-{self.flavour}"

    @property
    def region_task(self) -> str:
        return self.task or ("caption" if self.flavour == "captions" else "recognition")


# ---------------------------------------------------------------------------------------------------
# Shapes: inside tests on local coordinates (u right, v down, radius 1)
# ---------------------------------------------------------------------------------------------------
def _polygon(angles_deg, radii) -> np.ndarray:
    a = np.deg2rad(np.asarray(angles_deg, dtype=float) - 90)  # 0 deg = pointing up
    return np.stack([np.cos(a) * radii, np.sin(a) * radii], axis=1)


_POLYGONS = {
    "square": np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]),
    "diamond": np.array([[0.0, -1.0], [0.72, 0.0], [0.0, 1.0], [-0.72, 0.0]]),
    "triangle": _polygon([0, 120, 240], 1.0) + [0.0, 0.15],
    "star": _polygon(np.arange(10) * 36, np.where(np.arange(10) % 2 == 0, 1.0, 0.45)),
    "hexagon": _polygon(np.arange(6) * 60, 0.95),
    "cross": 0.95 * np.array([[-0.32, -1], [0.32, -1], [0.32, -0.32], [1, -0.32], [1, 0.32], [0.32, 0.32],
                              [0.32, 1], [-0.32, 1], [-0.32, 0.32], [-1, 0.32], [-1, -0.32], [-0.32, -0.32]]),
}


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return u * u + v * v <= 0.9**2
    if shape == "heart":  # the implicit heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, y up
        x, y = u * 1.15, -v * 1.15 + 0.15
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    return points_in_polygon(u, v, _POLYGONS[shape])


def _texture(texture: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """[N] bool: True where the accent colour shows (pattern in object coordinates)."""
    period = max(3.0, r / 2.5) / r  # in radius units, at least 3 px
    if texture == "striped":
        return np.floor(u / period).astype(int) % 2 == 1
    if texture == "checkered":
        return (np.floor(u / period).astype(int) + np.floor(v / period).astype(int)) % 2 == 1
    if texture == "dotted":
        fu, fv = (u / period) % 2 - 1, (v / period) % 2 - 1
        return fu * fu + fv * fv < 0.45
    return np.zeros(u.shape, dtype=bool)


def _accent(rgb: tuple[int, int, int]) -> np.ndarray:
    c = np.asarray(rgb, dtype=float)
    return c * 0.5 if c.mean() > 110 else c + (255 - c) * 0.55


# ---------------------------------------------------------------------------------------------------
# One scene
# ---------------------------------------------------------------------------------------------------
@dataclass
class _Drawn:
    shape: str
    colour: str
    size: str
    texture: str
    cx: float
    cy: float
    r: float
    angle: float
    full: np.ndarray  # [H, W] bool


def _local(o: _Drawn, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(o.angle), np.sin(o.angle)
    dx, dy = xs - o.cx, ys - o.cy
    return (dx * c + dy * s) / o.r, (-dx * s + dy * c) / o.r


def _sample_scene(cfg: SyntheticConfig, rng: np.random.Generator, width: int, height: int) -> list[_Drawn]:
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    n = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    side = min(width, height)
    drawn: list[_Drawn] = []
    visible: list[np.ndarray] = []
    for _ in range(n):
        for _attempt in range(40):
            shape = SHAPES[rng.integers(len(SHAPES))]
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
            if any(d.shape == shape and d.colour == colour for d in drawn):
                continue  # (colour, shape) names an object uniquely within an image
            size = list(SIZES)[rng.integers(len(SIZES))]
            r = float(rng.uniform(*SIZES[size])) * side
            if drawn and rng.random() < cfg.overlap:
                anchor = drawn[rng.integers(len(drawn))]
                d, a = (anchor.r + r) * rng.uniform(0.55, 1.0), rng.uniform(0, 2 * np.pi)
                cx, cy = anchor.cx + d * np.cos(a), anchor.cy + d * np.sin(a)
            else:
                cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            if not (0.8 * r <= cx <= width - 0.8 * r and 0.8 * r <= cy <= height - 0.8 * r):
                continue
            angle = 0.0 if shape == "circle" else float(np.deg2rad(rng.uniform(-15, 15)))
            obj = _Drawn(shape, colour, size, TEXTURES[rng.integers(len(TEXTURES))], cx, cy, r, angle,
                         np.zeros((height, width), dtype=bool))
            obj.full = _inside(shape, *_local(obj, xs, ys))
            if obj.full.sum() < 30:
                continue
            after = [vis & ~obj.full for vis in visible]
            if all(a.sum() >= cfg.min_visible * d.full.sum() for a, d in zip(after, drawn, strict=True)):
                drawn.append(obj)
                visible = [*after, obj.full.copy()]
                break
    return drawn


def render_scene(drawn: list[_Drawn], width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Paint background then objects in order -> [H, W, 3] uint8."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    base = np.asarray(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], dtype=float)
    gx, gy = rng.uniform(-25, 25, size=2)
    img = base + (gx * (xs / width - 0.5) + gy * (ys / height - 0.5))[..., None]
    img = img + rng.normal(0, 5, size=(height, width, 3))
    for o in drawn:
        u, v = _local(o, xs[o.full], ys[o.full])
        colour = np.asarray(COLOURS[o.colour], dtype=float)
        accent = _texture(o.texture, u, v, o.r)
        pixels = np.where(accent[:, None], _accent(COLOURS[o.colour]), colour)
        img[o.full] = pixels + rng.normal(0, 3, size=pixels.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def synthetic_image(cfg: SyntheticConfig, split: str, index: int) -> tuple[np.ndarray, ImageRecord]:
    """Image ``index`` of ``split``: ([H, W, 3] uint8, its record with file_name
    ``images/<split>/<index>.png``). Deterministic in (cfg.seed, split, index)."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(split.encode()), index])
    width, height = (int(rng.integers(cfg.image_size[0], cfg.image_size[1] + 1)) for _ in range(2))
    drawn = _sample_scene(cfg, rng, width, height)
    image = render_scene(drawn, width, height, rng)
    visible = [o.full & ~np.logical_or.reduce([d.full for d in drawn[k + 1:]] or [np.zeros_like(o.full)])
               for k, o in enumerate(drawn)]
    objects = []
    for k, (o, vis) in enumerate(zip(drawn, visible, strict=True)):
        yy, xx = np.nonzero(vis)
        objects.append(SceneObject(o.shape, o.colour, o.size, o.texture, (float(xx.mean()) + 0.5, float(yy.mean()) + 0.5),
                                   occluded_by=[j for j in range(k + 1, len(drawn)) if (o.full & drawn[j].full).any()],
                                   covers=[j for j in range(k) if (o.full & drawn[j].full).any()]))
    image_id = f"{split}-{index:06d}"
    regions = []
    for k, (o, vis, obj) in enumerate(zip(drawn, visible, objects, strict=True)):
        category = o.shape
        if cfg.flavour == "weak":
            category = o.shape if cfg.categories == "shape" else f"{o.colour} {o.shape}"
            phrases = [category]
        else:
            phrases = region_phrases(k, objects, width, height, rng, count=cfg.phrases)
        vpos, hpos = place(obj.centre, width, height)
        attributes = {"shape": o.shape, "colour": o.colour, "size": o.size, "texture": o.texture, "z": k,
                      "vertical": vpos, "horizontal": hpos,
                      "visible_fraction": round(float(vis.sum() / o.full.sum()), 4)}
        regions.append(Region(box=mask_to_box(vis), phrases=phrases, category=category, mask=rle_encode(vis),
                              task=cfg.region_task, region_id=f"{image_id}-{k}", attributes=attributes))
    record = ImageRecord(image_id=image_id, file_name=f"images/{split}/{index:06d}.png", width=width, height=height,
                         regions=regions, source=cfg.source, split=split)
    return image, record


def _write_one(job: tuple[SyntheticConfig, str, int, str]) -> ImageRecord:
    cfg, split, index, root = job
    image, record = synthetic_image(cfg, split, index)
    path = Path(root) / record.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", compress_level=6)
    return record


def generate_synthetic(out_dir: str | os.PathLike, cfg: SyntheticConfig, *, workers: int = 1,
                       compress: bool = True) -> dict[str, Any]:
    """Write ``out_dir/images/<split>/*.png``, ``out_dir/<split>.jsonl[.gz]`` and ``manifest.json``.

    ``workers`` processes render images in parallel; the bytes do not depend on it. Returns the manifest.
    A previous generation in ``out_dir`` (it has a manifest) is replaced; any other non-empty folder
    is refused, so nothing else is ever deleted.
    """
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        if not (root / "manifest.json").is_file():
            raise ValueError(f"{root} is not empty and holds no manifest.json: refusing to write synthetic data there")
        shutil.rmtree(root / "images", ignore_errors=True)
        for old in [*root.glob("*.jsonl"), *root.glob("*.jsonl.gz"), root / "manifest.json"]:
            old.unlink()
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in cfg.splits.items():
        jobs = [(cfg, split, i, str(root)) for i in range(n)]
        if workers > 1 and n > 1:
            with get_context("fork").Pool(workers) as pool:
                records = pool.map(_write_one, jobs, chunksize=max(1, n // (4 * workers)))
        else:
            records = [_write_one(job) for job in jobs]
        name = f"{split}.jsonl" + (".gz" if compress else "")
        files[name] = write_records(root / name, records)
    params = asdict(cfg)
    params["image_size"], params["objects"] = list(cfg.image_size), list(cfg.objects)
    return write_manifest(root, files, image_dir="images", params=params)
