"""Captions of the synthetic scenes: varied sentences whose right answer depends on the region AND its
context, so a captioner must look at the prompted region (and around it) to score well.

Every object is described by what the generator drew (``SceneObject``); a caption may state its
attributes (size, texture, colour, shape), its place in the image (thirds: top/middle/bottom x
left/center/right), its relation to its nearest neighbour (left of / right of / above / below), the
occlusion between them (behind / on top of), and its rank among objects of the same shape
("the leftmost of the three circles"). ``region_phrases`` returns several distinct references per
object, built from different templates, the first one always the fullest description.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SceneObject", "article", "place", "place_phrase", "region_phrases"]

TEXTURE_ADJ = {"plain": "", "striped": "striped", "dotted": "dotted", "checkered": "checkered"}
TEXTURE_NOUN = {"plain": "no pattern", "striped": "stripes", "dotted": "dots", "checkered": "a checkered pattern"}
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"]
PLURALS = {"cross": "crosses"}


@dataclass
class SceneObject:
    """What the generator drew. centre: visible-mask centroid (x, y) in pixels. occluded_by / covers:
    indices of objects drawn over this one / under this one where they overlap."""

    shape: str
    colour: str
    size: str
    texture: str
    centre: tuple[float, float]
    occluded_by: list[int] = field(default_factory=list)
    covers: list[int] = field(default_factory=list)

    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def article(phrase: str) -> str:
    """'a' or 'an' before ``phrase`` (by its first letter; good enough for this vocabulary)."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    phrase = " ".join(phrase.split())
    return f"{article(phrase)} {phrase}"


def _plural(shape: str) -> str:
    return PLURALS.get(shape, shape + "s")


def place(centre: tuple[float, float], width: int, height: int) -> tuple[str, str]:
    """(vertical, horizontal) third of the image: ("top"|"middle"|"bottom", "left"|"center"|"right")."""
    x, y = centre
    h = ("left", "center", "right")[min(2, int(3 * x / width))]
    v = ("top", "middle", "bottom")[min(2, int(3 * y / height))]
    return v, h


def place_phrase(vertical: str, horizontal: str) -> str:
    if vertical == "middle" and horizontal == "center":
        return "in the center"
    if vertical == "middle":
        return f"on the {horizontal}"
    if horizontal == "center":
        return f"at the {vertical}"
    return f"in the {vertical} {horizontal} corner"


def _relation(obj: SceneObject, other: SceneObject) -> str:
    dx, dy = obj.centre[0] - other.centre[0], obj.centre[1] - other.centre[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _rank(i: int, objects: list[SceneObject]) -> str | None:
    """'the leftmost of the three circles' / 'the second circle from the left', or None if unique."""
    peers = sorted((j for j, o in enumerate(objects) if o.shape == objects[i].shape), key=lambda j: objects[j].centre[0])
    n = len(peers)
    if n < 2:
        return None
    k = peers.index(i)
    shape, count = objects[i].shape, NUMBERS[n] if n < len(NUMBERS) else str(n)
    if k == 0:
        return f"the leftmost of the {count} {_plural(shape)}"
    if k == n - 1:
        return f"the rightmost of the {count} {_plural(shape)}"
    return f"the {ORDINALS[k]} {shape} from the left"


def _nearest(i: int, objects: list[SceneObject]) -> int | None:
    best, best_d = None, float("inf")
    for j, o in enumerate(objects):
        if j != i:
            d = np.hypot(o.centre[0] - objects[i].centre[0], o.centre[1] - objects[i].centre[1])
            if d < best_d:
                best, best_d = j, d
    return best


def region_phrases(i: int, objects: list[SceneObject], width: int, height: int,
                   rng: np.random.Generator, count: int = 3) -> list[str]:
    """``count`` distinct captions of object ``i`` (fewer if fewer templates apply); the first is
    the full description: size, texture, colour, shape and place."""
    o = objects[i]
    where = place_phrase(*place(o.centre, width, height))
    full = _with_article(f"{o.size} {TEXTURE_ADJ[o.texture]} {o.colour} {o.shape}") + f" {where}"
    candidates = [
        f"{o.size} {o.shape} {where}, coloured {o.colour}",
        f"{o.colour} {o.shape} with {TEXTURE_NOUN[o.texture]}" if o.texture != "plain" else f"plain {o.colour} {o.shape}",
        f"{_with_article(o.size + ' ' + o.colour + ' ' + o.shape)} among {NUMBERS[min(len(objects), 8)]} shapes"
        if len(objects) > 1 else f"{_with_article(o.colour + ' ' + o.shape)}, alone in the picture",
    ]
    j = _nearest(i, objects)
    if j is not None:
        other = objects[j]
        candidates.append(f"the {o.name()} {_relation(o, other)} the {other.name()}")
    if o.occluded_by:
        top = objects[o.occluded_by[-1]]
        candidates.append(f"{_with_article(o.name())} partly hidden behind {_with_article(top.name())}")
    if o.covers:
        under = objects[o.covers[0]]
        candidates.append(f"{_with_article(o.name())} lying on top of {_with_article(under.name())}")
    rank = _rank(i, objects)
    if rank is not None:
        candidates.append(f"{rank}, {_with_article(o.size + ' ' + o.colour)} one")
    picked = [full]
    for k in rng.permutation(len(candidates)):
        if len(picked) >= count:
            break
        text = " ".join(candidates[k].split())
        if text not in picked:
            picked.append(text)
    return picked
