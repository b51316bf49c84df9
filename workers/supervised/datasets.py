"""Few-shot image classification data sets (N-way K-shot, :mod:`workers.supervised.classes`).

* :class:`DigitsRotations` (``digits-rotations``): embedded, no download -- scikit-learn's 8x8
  digits (``sklearn.datasets.load_digits``, shipped inside the package), each digit rotated by
  0°, 90°, 180° and 270° as a class of its own (40 classes), the augmentation of Omniglot's
  few-shot protocol.  A small stand-in to try a job end to end, not a benchmark: its ten base
  shapes leave too few training characters to compare learners (``glyphs``,
  :mod:`workers.supervised.glyphs`, is the embedded set for that).
* :class:`Omniglot` (``omniglot``): Lake et al. 2015's characters from a local directory in
  their published layout, with the protocol of Vinyals et al. 2016 and Finn et al. 2017.
* :class:`MiniImageNet` (``mini-imagenet``): Vinyals et al. 2016's mini-ImageNet with Ravi &
  Larochelle 2017's class split, from a local directory in its published layout.

Images are float32 in [0, 1], channels first.  The two benchmarks are read where
:func:`workers.supervised.images.data_root` says, decoded the first time an episode needs an
image and cached (:class:`~workers.supervised.images.ImageCache`).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workers.supervised.classes import ROTATIONS, FewShotClassification, rotated_class, unrotated_class
from workers.supervised.images import ImageCache, data_root, load_image
from workers.supervised.splits import SUPERVISED_SPLITS, split_sizes
from workers.tasks import TaskFamilyError

__all__ = ["DIGITS_SPLIT", "MINI_IMAGENET_LAYOUT", "OMNIGLOT_LAYOUT", "DigitsRotations", "MiniImageNet", "Omniglot"]


def _rotate(images: np.ndarray, k: int) -> np.ndarray:
    """``images`` ``[N, C, H, W]`` rotated by ``k`` x 90° counter-clockwise (``np.rot90``)."""
    return np.ascontiguousarray(np.rot90(images, k, axes=(-2, -1)))


# ---- scikit-learn's digits, rotated ------------------------------------------------------------
#: The digits of each split, 6/2/2 (24/8/8 classes with the rotations): drawn once as
#: ``np.random.default_rng(0).permutation(10)`` and fixed here.  All rotations of a digit are in
#: its digit's split, as all rotations of an Omniglot character are.  Mind that a 180° turn maps
#: 6 to about 9 (train/val) and leaves 8 and 1 (test) about unchanged, so two test classes of a
#: task can be near twins: fine for a smoke test, a reason not to report numbers on it.
DIGITS_SPLIT: dict[str, tuple[int, ...]] = {"train": (4, 6, 2, 7, 3, 5), "val": (9, 0), "test": (8, 1)}


@functools.cache
def _digits() -> tuple[np.ndarray, ...]:
    """The images of each digit 0..9, ``[n_d, 8, 8]`` float32 in [0, 1] (read-only, loaded once)."""
    # scikit-learn is imported here, not at the top: only this data set needs it and it is slow to import
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (np.asarray(digits.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)  # pixel counts 0..16
    out = tuple(np.ascontiguousarray(images[digits.target == d]) for d in range(10))
    for x in out:
        x.setflags(write=False)
    return out


class DigitsRotations(FewShotClassification):
    """N-way K-shot classification of rotated 8x8 digits (see the module docstring): 40 classes,
    class ``4 * digit + k`` is the digit rotated by ``k`` x 90°; ``input_shape`` (1, 8, 8);
    about 180 examples per class; meta-train/val/test classes 24/8/8 (:data:`DIGITS_SPLIT`).

    Args:
        ways: N, classes per task (at most 8: the val and test splits' classes).
        shots: K, support examples per class.
        queries: query examples per class.
    """

    name = "digits-rotations"

    def __init__(self, *, ways: int = 5, shots: int = 1, queries: int = 15) -> None:
        super().__init__(ways=ways, shots=shots, queries=queries)
        self._images = _digits()
        self._pools = {s: tuple(rotated_class(d, k) for d in DIGITS_SPLIT[s] for k in range(ROTATIONS))
                       for s in SUPERVISED_SPLITS}
        self._check_pools(ways=self.ways, shots=self.shots, queries=self.queries)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, 8, 8)

    def split_classes(self, split: str) -> Sequence[int]:
        return self._pools[split]

    def class_size(self, cls: int) -> int:
        return len(self._images[unrotated_class(cls)[0]])

    def examples(self, cls: int, indices: np.ndarray) -> np.ndarray:
        digit, k = unrotated_class(cls)
        return _rotate(self._images[digit][indices][:, None], k)


# ---- Omniglot ------------------------------------------------------------------------------------
OMNIGLOT_LAYOUT = ("images_background/<alphabet>/<characterNN>/*.png and images_evaluation/<alphabet>/<characterNN>/"
                   "*.png (Lake et al. 2015's 105x105 images, as unzipped from images_background.zip and "
                   "images_evaluation.zip)")
#: The seed of the fixed shuffle that splits Omniglot's characters.
OMNIGLOT_SPLIT_SEED = 1
#: Finn et al. 2017's split of the 1623 characters (their code: 1200 meta-train characters, 100
#: of which held out for validation, as in Vinyals et al. 2016's 1200/423).
OMNIGLOT_CHARACTERS, OMNIGLOT_TRAIN, OMNIGLOT_VAL = 1623, 1100, 100


class Omniglot(FewShotClassification):
    """N-way K-shot Omniglot (Vinyals et al. 2016, sec. 4.1.1; Finn et al. 2017, sec. 5.2).

    The characters of both published sets (``images_background``: 964, ``images_evaluation``:
    659) are pooled, sorted by path and shuffled once with a fixed seed
    (:data:`OMNIGLOT_SPLIT_SEED`): the first 1100 are meta-train, the next 100 meta-val, the other
    423 meta-test, as in Finn et al.'s code (which shuffles a directory listing; the sizes match
    theirs, the characters do not).  A smaller directory (a test fixture) is split in the same
    proportions.  Each character rotated by 0°, 90°, 180° and 270° is a class (Santoro et al.
    2016), so class ``4 * character + k``; all rotations of a character share its split.

    Images are resized from 105x105 to 28x28 (Lanczos, on the grey-scale image) and inverted so
    the strokes are 1 and the background 0 (as Finn et al.'s code does): ``input_shape``
    (1, 28, 28).  Each character has 20 drawings, so ``shots + queries`` is at most 20.

    Args:
        ways: N, classes per task.
        shots: K, support examples per class.
        queries: query examples per class.
        data_dir: the directory holding ``images_background/`` and ``images_evaluation/``; None:
            ``$METARL_DATA_DIR/omniglot``.

    Raises:
        TaskFamilyError: the directory or its layout is missing (the message names the path and
            the layout), or a split has too few classes or drawings for ``ways``/``shots``/``queries``.
    """

    name = "omniglot"
    image_size = 28
    #: decoded 28x28 images kept per process (all 32,460 of them: about 25 MB)
    cache_size = 40_000

    def __init__(self, *, ways: int = 5, shots: int = 1, queries: int = 15, data_dir: str | None = None) -> None:
        super().__init__(ways=ways, shots=shots, queries=queries)
        self.root = data_root("omniglot", data_dir, layout=OMNIGLOT_LAYOUT)
        self._characters = self._index(self.root)
        sizes = split_sizes(len(self._characters), train=OMNIGLOT_TRAIN, val=OMNIGLOT_VAL,
                            reference=OMNIGLOT_CHARACTERS)
        order = np.random.default_rng(OMNIGLOT_SPLIT_SEED).permutation(len(self._characters))
        bounds = np.cumsum((0, *sizes))
        self._pools = {s: tuple(rotated_class(int(c), k) for c in sorted(order[lo:hi]) for k in range(ROTATIONS))
                       for s, lo, hi in zip(SUPERVISED_SPLITS, bounds[:-1], bounds[1:], strict=True)}
        self._cache = ImageCache(self.cache_size)
        self._check_pools(ways=self.ways, shots=self.shots, queries=self.queries)

    @staticmethod
    def _index(root: Path) -> list[tuple[Path, ...]]:
        """The drawings of every character, characters sorted by ``(set, alphabet, character)``."""
        sets = [root / "images_background", root / "images_evaluation"]
        missing = [p.name for p in sets if not p.is_dir()]
        if missing:
            raise TaskFamilyError(f"omniglot: {str(root)!r} has no {' or '.join(missing)}/; expected {OMNIGLOT_LAYOUT}")
        characters = [tuple(sorted(character.glob("*.png")))
                      for images in sets
                      for alphabet in sorted(p for p in images.iterdir() if p.is_dir())
                      for character in sorted(p for p in alphabet.iterdir() if p.is_dir())]
        if not characters or not any(characters):
            raise TaskFamilyError(f"omniglot: no character directories with .png files under {str(root)!r}; "
                                  f"expected {OMNIGLOT_LAYOUT}")
        return characters

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.image_size, self.image_size)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "data_dir": str(self.root)}

    def split_classes(self, split: str) -> Sequence[int]:
        return self._pools[split]

    def class_size(self, cls: int) -> int:
        return len(self._characters[unrotated_class(cls)[0]])

    def class_name(self, cls: int) -> str:
        """``alphabet/characterNN/rotK`` of a class, for logs."""
        character, k = unrotated_class(cls)
        path = self._characters[character][0].parent
        return f"{path.parent.name}/{path.name}/rot{90 * k}"

    def examples(self, cls: int, indices: np.ndarray) -> np.ndarray:
        character, k = unrotated_class(cls)
        paths = self._characters[character]
        images = [self._cache.get(paths[i], functools.partial(load_image, paths[i], size=self.image_size, mode="L"))
                  for i in indices]
        strokes = 1.0 - np.stack(images).astype(np.float32) / 255.0
        return _rotate(strokes[:, None], k)


# ---- mini-ImageNet ---------------------------------------------------------------------------------
MINI_IMAGENET_LAYOUT = ("images/<filename> (84x84 RGB images) and train.csv, val.csv, test.csv whose rows are "
                        "filename,label (Ravi & Larochelle 2017's split: 64/16/20 classes of 600 images)")


class MiniImageNet(FewShotClassification):
    """N-way K-shot mini-ImageNet (Vinyals et al. 2016) with Ravi & Larochelle 2017's split.

    The split is the published one: the classes (``label``) of ``train.csv``, ``val.csv`` and
    ``test.csv`` are the meta-train, meta-val and meta-test pools (64/16/20 classes, each of 600
    images in ``images/``).  Classes are numbered in that order, sorted by label within a split.
    Images are RGB, resized to 84x84 (Lanczos, as Finn et al.'s ``proc_images.py``) where they
    have another size, scaled to [0, 1]: ``input_shape`` (3, 84, 84).

    Args:
        ways: N, classes per task (at most 16: the val split's classes).
        shots: K, support examples per class.
        queries: query examples per class.
        data_dir: the directory holding ``images/`` and the three CSVs; None:
            ``$METARL_DATA_DIR/mini-imagenet``.

    Raises:
        TaskFamilyError: the directory or its layout is missing, a CSV row is malformed, a class is
            in two splits, or a split has too few classes or images for ``ways``/``shots``/``queries``.
    """

    name = "mini-imagenet"
    image_size = 84
    #: decoded 84x84 RGB images kept per process (about 250 MB; the data set's 60,000 would be 1.3 GB)
    cache_size = 12_000

    def __init__(self, *, ways: int = 5, shots: int = 1, queries: int = 15, data_dir: str | None = None) -> None:
        super().__init__(ways=ways, shots=shots, queries=queries)
        self.root = data_root("mini-imagenet", data_dir, layout=MINI_IMAGENET_LAYOUT)
        self._labels: list[str] = []
        self._files: list[tuple[str, ...]] = []
        self._pools: dict[str, tuple[int, ...]] = {}
        self._read_split_files()
        self._cache = ImageCache(self.cache_size)
        self._check_pools(ways=self.ways, shots=self.shots, queries=self.queries)

    def _read_split_files(self) -> None:
        missing = [name for name in ("images/", "train.csv", "val.csv", "test.csv")
                   if not (self.root / name.rstrip("/")).exists()]
        if missing:
            raise TaskFamilyError(f"mini-imagenet: {str(self.root)!r} has no {', '.join(missing)}; "
                                  f"expected {MINI_IMAGENET_LAYOUT}")
        seen: dict[str, str] = {}
        for split in SUPERVISED_SPLITS:
            path = self.root / f"{split}.csv"
            files: dict[str, list[str]] = {}
            with path.open(newline="", encoding="utf-8") as handle:
                for line, row in enumerate(csv.reader(handle), start=1):
                    if line == 1 and [c.strip() for c in row] == ["filename", "label"]:
                        continue  # the published files' header
                    if not row:
                        continue
                    if len(row) != 2 or not row[0].strip() or not row[1].strip():
                        raise TaskFamilyError(f"mini-imagenet: {str(path)!r} line {line} is {row!r}; "
                                              "rows are filename,label")
                    files.setdefault(row[1].strip(), []).append(row[0].strip())
            if not files:
                raise TaskFamilyError(f"mini-imagenet: {str(path)!r} lists no images; expected {MINI_IMAGENET_LAYOUT}")
            for label in sorted(files):
                if label in seen:
                    raise TaskFamilyError(f"mini-imagenet: class {label!r} is in both {seen[label]}.csv and "
                                          f"{split}.csv; the splits' classes must be disjoint")
                seen[label] = split
            first = len(self._labels)
            self._labels += sorted(files)
            self._files += [tuple(files[label]) for label in sorted(files)]
            self._pools[split] = tuple(range(first, len(self._labels)))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "data_dir": str(self.root)}

    def split_classes(self, split: str) -> Sequence[int]:
        return self._pools[split]

    def class_size(self, cls: int) -> int:
        return len(self._files[cls])

    def class_name(self, cls: int) -> str:
        """The class's label (its WordNet id, e.g. ``n01532829``)."""
        return self._labels[cls]

    def examples(self, cls: int, indices: np.ndarray) -> np.ndarray:
        paths = [self.root / "images" / self._files[cls][i] for i in indices]
        images = [self._cache.get(p, functools.partial(load_image, p, size=self.image_size, mode="RGB"))
                  for p in paths]
        return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
