"""The splits of a supervised task distribution: meta-train, meta-val and meta-test.

Few-shot classification benchmarks publish three disjoint class pools (Ravi & Larochelle 2017's
mini-ImageNet: 64/16/20 classes; Finn et al. 2017's Omniglot code: 1100/100/423 characters), the
middle one for model selection.  :data:`workers.tasks.Split` names only ``"train"`` and
``"test"`` so far; the distributions of this package also take ``"val"`` and carry it in
:attr:`Task.split <workers.tasks.Task.split>` as is.
"""

from __future__ import annotations

from typing import cast

from workers.tasks import Split, TaskFamilyError

__all__ = ["SUPERVISED_SPLITS", "check_split", "split_sizes"]

SUPERVISED_SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_split(name: str, split: str) -> Split:
    """``split`` if it is one of :data:`SUPERVISED_SPLITS`, else a :class:`TaskFamilyError` naming them."""
    if split not in SUPERVISED_SPLITS:
        raise TaskFamilyError(f"{name}: unknown split {split!r}; valid splits: {list(SUPERVISED_SPLITS)}")
    return cast(Split, split)  # "val" is not in workers.tasks.Split yet (see the module docstring)


def split_sizes(total: int, *, train: int, val: int, reference: int) -> tuple[int, int, int]:
    """Split ``total`` items in the proportions ``train : val : rest`` of a ``reference`` total.

    On the reference total the published sizes come back exactly; a smaller set (a test fixture)
    keeps the proportions with at least one item per split.

    Raises:
        TaskFamilyError: fewer than three items.
    """
    if total < 3:
        raise TaskFamilyError(f"{total} base classes cannot be split into train, val and test; at least 3 needed")
    n_train = min(max(1, round(total * train / reference)), total - 2)
    n_val = min(max(1, round(total * val / reference)), total - n_train - 1)
    return n_train, n_val, total - n_train - n_val
