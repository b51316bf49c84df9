"""``glyphs``: procedurally drawn characters, an embedded few-shot classification set with
Omniglot's shape and no files at all.

Omniglot (Lake et al. 2015) is 1623 characters, each drawn once by 20 people; what makes it the
standard check of few-shot learning is that test characters are *new shapes*, seen only through
one or a few drawings.  scikit-learn's 8x8 digits (``digits-rotations``) cannot play that part:
ten base shapes leave a handful of training characters, and raw pixels of its clean, centred
digits are already a strong representation.  This set draws the characters instead:

* **a character** (class ``c``) is 1 to 3 pen strokes, each a cubic Bézier curve whose four
  control points are uniform in the central 70% of the canvas; each stroke after the first
  starts, with probability 1/2, at an end of an earlier one (a joined stroke).  It is drawn from
  ``numpy.random.default_rng([GLYPHS_SEED, c])``, so the set is the same on every machine and
  never stored;
* **a drawing** (example ``j`` of class ``c``, 20 per class like Omniglot's 20 drawers) is that
  character as one hand writes it, from ``default_rng([GLYPHS_SEED, c, 1 + j])``: every control
  point moved by N(0, 0.035²) (the hand's wobble), the whole glyph rotated by N(0, 10°), scaled
  by U(0.88, 1.12), sheared by N(0, 0.08) and shifted by N(0, 0.03²) per axis (fractions of the
  side), and inked with a pen of half-width U(0.035, 0.06) x side: a pixel's ink is
  ``exp(-d² / 2w²)`` of its centre's distance ``d`` to the nearest point of the strokes (each
  stroke a polyline of 24 segments);
* **splits** are Omniglot's sizes as this package reads Omniglot: characters 0..1099 meta-train,
  1100..1199 meta-val, 1200..1622 meta-test -- disjoint shapes, so a test task is five
  characters the model has never seen.

Images are ``(1, size, size)`` float32 in [0, 1] (``size`` 16 by default: the four-block encoder
pools it to 1x1 without rounding).  A class's 20 drawings are made the first time an episode
needs them (10-20 ms at 16x16 on one core) and kept (20 x size² floats per class: 33 MB for
all 1623 at 16x16).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.supervised.classes import FewShotClassification

__all__ = ["GLYPHS_SEED", "GLYPHS_SPLIT", "Glyphs", "draw_character"]

#: Seeds every character and drawing (the set is fixed, like a published one).
GLYPHS_SEED = 1623
#: ``[start, stop)`` of each split's character ids: Omniglot's 1100 / 100 / 423.
GLYPHS_SPLIT: dict[str, tuple[int, int]] = {"train": (0, 1100), "val": (1100, 1200), "test": (1200, 1623)}
#: drawings per character (Omniglot's 20 drawers)
DRAWINGS = 20

_MAX_STROKES = 3
_MARGIN = 0.15
_SEGMENTS = 24
_WOBBLE = 0.035
_ROTATION_DEG = 10.0
_SCALE = (0.88, 1.12)
_SHEAR = 0.08
_SHIFT = 0.03
_PEN = (0.035, 0.06)

_T = np.linspace(0.0, 1.0, _SEGMENTS + 1)
#: cubic Bernstein basis at the polyline's vertices: ``[segments + 1, 4]``
_BERNSTEIN = np.stack([(1 - _T) ** 3, 3 * (1 - _T) ** 2 * _T, 3 * (1 - _T) * _T ** 2, _T ** 3], axis=1)


def character_strokes(cls: int) -> list[np.ndarray]:
    """Character ``cls``'s strokes: each ``[4, 2]`` Bézier control points (x, y) in [0, 1]."""
    rng = np.random.default_rng([GLYPHS_SEED, int(cls)])
    strokes: list[np.ndarray] = []
    for i in range(int(rng.integers(1, _MAX_STROKES + 1))):
        points = rng.uniform(_MARGIN, 1.0 - _MARGIN, size=(4, 2))
        if i > 0 and rng.random() < 0.5:
            earlier = strokes[int(rng.integers(len(strokes)))]
            points[0] = earlier[int(rng.choice([0, 3]))]
        strokes.append(points)
    return strokes


@functools.cache
def _pixel_centres(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([(xx.ravel() + 0.5) / size, (yy.ravel() + 0.5) / size], axis=1)


def _distance_to_segments(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[P]`` distance of each point ``p`` ``[P, 2]`` to the nearest segment ``a[i] -> b[i]``."""
    ab = b - a
    ap = p[:, None, :] - a[None, :, :]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    nearest = a[None] + t[..., None] * ab[None]
    return np.sqrt(((p[:, None, :] - nearest) ** 2).sum(-1)).min(axis=1)


def draw_character(cls: int, drawing: int, size: int = 16) -> np.ndarray:
    """Drawing ``drawing`` of character ``cls`` (see the module docstring): ``[size, size]`` float32."""
    return _draw(character_strokes(cls), cls, drawing, size)


def _draw(strokes: list[np.ndarray], cls: int, drawing: int, size: int) -> np.ndarray:
    """:func:`draw_character` with the character's ``strokes`` given (drawn once per character)."""
    rng = np.random.default_rng([GLYPHS_SEED, int(cls), 1 + int(drawing)])
    angle = np.deg2rad(rng.normal(0.0, _ROTATION_DEG))
    scale = rng.uniform(*_SCALE)
    shear = rng.normal(0.0, _SHEAR)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    affine = scale * rotation @ np.array([[1.0, shear], [0.0, 1.0]])
    shift = rng.normal(0.0, _SHIFT, size=2)
    pen = rng.uniform(*_PEN)
    starts, ends = [], []
    for points in strokes:
        curve = _BERNSTEIN @ (points + rng.normal(0.0, _WOBBLE, size=points.shape))
        curve = (curve - 0.5) @ affine.T + 0.5 + shift
        starts.append(curve[:-1])
        ends.append(curve[1:])
    d = _distance_to_segments(_pixel_centres(size), np.concatenate(starts), np.concatenate(ends))
    return np.exp(-(d ** 2) / (2 * pen ** 2)).reshape(size, size).astype(np.float32)


@functools.lru_cache(maxsize=4096)
def _class_images(cls: int, size: int) -> np.ndarray:
    """All drawings of ``cls``: ``[DRAWINGS, 1, size, size]`` (read-only, made once per process)."""
    strokes = character_strokes(cls)
    images = np.stack([_draw(strokes, cls, j, size) for j in range(DRAWINGS)])[:, None]
    images.setflags(write=False)
    return images


class Glyphs(FewShotClassification):
    """N-way K-shot classification of procedurally drawn characters (see the module docstring):
    1623 classes split 1100/100/423 (:data:`GLYPHS_SPLIT`), 20 drawings each; ``input_shape``
    ``(1, size, size)``.

    Args:
        ways: N, classes per task (at most 100: the val split's characters).
        shots: K, support drawings per class.
        queries: query drawings per class (``shots + queries`` at most 20).
        size: the image side in pixels.
    """

    name = "glyphs"

    def __init__(self, *, ways: int = 5, shots: int = 1, queries: int = 15, size: int = 16) -> None:
        super().__init__(ways=ways, shots=shots, queries=queries)
        self.size = int(size)
        self._pools = {split: tuple(range(lo, hi)) for split, (lo, hi) in GLYPHS_SPLIT.items()}
        self._check_pools(ways=self.ways, shots=self.shots, queries=self.queries)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.size, self.size)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "size": self.size}

    def split_classes(self, split: str) -> Sequence[int]:
        return self._pools[split]

    def class_size(self, cls: int) -> int:
        return DRAWINGS

    def examples(self, cls: int, indices: np.ndarray) -> np.ndarray:
        return _class_images(int(cls), self.size)[indices]
