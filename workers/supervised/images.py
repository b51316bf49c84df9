"""Image files of the local benchmark data sets: where they are, how they are decoded, and a cache.

The data sets are never downloaded: they sit in a local directory in their published layout.
The directory is the distribution's ``data_dir`` where one is given, else
``$METARL_DATA_DIR/<data set>`` (``METARL_DATA_DIR=/data`` serves ``/data/omniglot`` and
``/data/mini-imagenet``): the data's location is a property of the machines a job runs on, not of
the experiment, so a job spec names the benchmark and every worker node finds it where the
deployment mounted it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from workers.tasks import TaskFamilyError

__all__ = ["DATA_DIR_ENV", "ImageCache", "data_root", "load_image"]

#: The environment variable naming the directory that holds every local data set.
DATA_DIR_ENV = "METARL_DATA_DIR"


def data_root(dataset: str, data_dir: str | None, *, layout: str) -> Path:
    """The directory of ``dataset``: ``data_dir``, else ``$METARL_DATA_DIR/<dataset>``.

    Args:
        dataset: the data set's directory name under ``METARL_DATA_DIR`` (``"omniglot"``).
        data_dir: an explicit directory, or None.
        layout: the expected layout, for the error message.

    Raises:
        TaskFamilyError: neither is given, or the directory does not exist; the message names the
            path and the layout expected there.
    """
    if data_dir is None:
        base = os.environ.get(DATA_DIR_ENV)
        if not base:
            raise TaskFamilyError(f"{dataset}: no data directory; pass data_dir or set {DATA_DIR_ENV} to a directory "
                                  f"holding {dataset}/ laid out as {layout} (it is never downloaded)")
        root = Path(base).expanduser() / dataset
    else:
        root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise TaskFamilyError(f"{dataset}: data directory {str(root)!r} does not exist; expected {layout} there "
                              "(it is never downloaded)")
    return root


def load_image(path: Path, *, size: int, mode: Literal["L", "RGB"]) -> np.ndarray:
    """The image at ``path`` in ``mode``, resized to ``size`` x ``size`` (Lanczos, as Finn et al.'s
    ``resize_images.py`` and ``proc_images.py`` do) where it has another size: uint8, ``[H, W]`` for
    ``"L"``, ``[H, W, 3]`` for ``"RGB"``.

    Raises:
        TaskFamilyError: the file is missing or not an image.
    """
    try:
        with Image.open(path) as file:
            image = file.convert(mode)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise TaskFamilyError(f"cannot read image {str(path)!r}: {exc}") from exc


class ImageCache:
    """A least-recently-used cache of decoded images, so an image is decoded once per process while
    the cache holds it (``max_items`` bounds the memory: a 84x84 RGB image is 21 KB)."""

    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = int(max_items)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __reduce__(self) -> tuple[type[ImageCache], tuple[int]]:
        return ImageCache, (self.max_items,)  # a copy (a pickled distribution) starts empty

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached value of ``key``, else ``load()`` (then cached)."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            return value
        value = load()
        value.setflags(write=False)  # callers share it: no one may change it in place
        self._items[key] = value
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return value
