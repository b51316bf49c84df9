"""Supervised few-shot task distributions (workers.supervised): seeded draws, disjoint class splits,
episode shapes and labels, support/query disjointness, the sinusoid's targets, the rotations,
and the local benchmarks (Omniglot, mini-ImageNet) read from tiny fixtures in their published
layouts."""

from __future__ import annotations

import csv
import math
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from workers.catalog import family_info
from workers.envs import family_names as rl_family_names
from workers.envs import make_family
from workers.supervised import (
    DATA_DIR_ENV,
    DigitsRotations,
    FewShotClassification,
    MiniImageNet,
    Omniglot,
    SinusoidRegression,
    distribution_names,
    make_distribution,
    task_classes,
)
from workers.supervised.classes import rotated_class, unrotated_class
from workers.supervised.datasets import DIGITS_SPLIT, MINI_IMAGENET_LAYOUT, OMNIGLOT_LAYOUT
from workers.supervised.glyphs import GLYPHS_SPLIT, Glyphs, draw_character
from workers.supervised.splits import SUPERVISED_SPLITS, split_sizes
from workers.tasks import SupportQuery, Task, TaskFamilyError

SUPERVISED = ["digits-rotations", "glyphs", "mini-imagenet", "omniglot", "sinusoid"]


# ---- fixtures: tiny data sets in the published layouts ------------------------------------------
#: Omniglot fixture: (set, alphabet, characters); 6 characters split 4/1/1 -> 16/4/4 classes
OMNIGLOT_CHARACTERS = [("images_background", "Alpha", 3), ("images_background", "Beta", 1),
                       ("images_evaluation", "Gamma", 2)]
OMNIGLOT_DRAWINGS = 5


def _drawing(character: int, drawing: int) -> Image.Image:
    """A 105x105 1-bit drawing, white background and one black off-centre bar (not symmetric)."""
    image = Image.new("1", (105, 105), 1)
    x0, y0 = 8 + 9 * character, 6 + 11 * drawing
    ImageDraw.Draw(image).rectangle((x0, y0, x0 + 16, y0 + 40), fill=0)
    return image


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A METARL_DATA_DIR with ``omniglot/`` and ``mini-imagenet/`` fixtures."""
    root = tmp_path_factory.mktemp("data")
    character = 0
    for images, alphabet, count in OMNIGLOT_CHARACTERS:
        for c in range(1, count + 1):
            folder = root / "omniglot" / images / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            for d in range(OMNIGLOT_DRAWINGS):
                _drawing(character, d).save(folder / f"{1000 + character:04d}_{d + 1:02d}.png")
            character += 1
    mini = root / "mini-imagenet"
    (mini / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {"train": ["n01000003", "n01000001", "n01000002"], "val": ["n02000001", "n02000002"],
              "test": ["n03000001", "n03000002"]}
    for split, split_labels in labels.items():
        with (mini / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"])
            for label in split_labels:
                for i in range(4):
                    name = f"{label}{i + 1:08d}.jpg"
                    size = (100, 90) if (label, i) == ("n01000001", 0) else (84, 84)  # one to resize
                    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                    Image.fromarray(pixels, "RGB").save(mini / "images" / name)
                    writer.writerow([name, label])
    return root


@pytest.fixture(scope="module")
def omniglot(data_root: Path) -> Omniglot:
    dist = make_distribution("omniglot", ways=3, shots=2, queries=2, data_dir=str(data_root / "omniglot"))
    assert isinstance(dist, Omniglot)
    return dist


@pytest.fixture(scope="module")
def mini_imagenet(data_root: Path) -> MiniImageNet:
    dist = make_distribution("mini-imagenet", ways=2, shots=1, queries=3, data_dir=str(data_root / "mini-imagenet"))
    assert isinstance(dist, MiniImageNet)
    return dist


@pytest.fixture(scope="module")
def digits() -> DigitsRotations:
    dist = make_distribution("digits-rotations")
    assert isinstance(dist, DigitsRotations)
    return dist


class Coded(FewShotClassification):
    """A data set whose example ``i`` of class ``c`` is the vector ``(c, i)``: episodes show what they hold."""

    name = "coded"

    def __init__(self, *, ways: int = 3, shots: int = 2, queries: int = 3) -> None:
        super().__init__(ways=ways, shots=shots, queries=queries)
        self._pools = {"train": tuple(range(6)), "val": (6, 7, 8), "test": (9, 10, 11)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (2,)

    def split_classes(self, split: str) -> Sequence[int]:
        return self._pools[split]

    def class_size(self, cls: int) -> int:
        return 7

    def examples(self, cls: int, indices: np.ndarray) -> np.ndarray:
        return np.stack([np.full(len(indices), cls), indices], axis=1).astype(np.float32)


def _episodes(dist, seed: int, split: str = "train", n: int = 4) -> tuple[list[Task], list[SupportQuery]]:
    rng = np.random.default_rng(seed)
    tasks = dist.sample_tasks(n, rng, split=split)
    return tasks, [dist.episode(t, rng) for t in tasks]


def _same_episodes(a: list[SupportQuery], b: list[SupportQuery]) -> bool:
    fields = ("x_support", "y_support", "x_query", "y_query")
    return all(np.array_equal(getattr(x, f), getattr(y, f)) for x, y in zip(a, b, strict=True) for f in fields)


# ---- registration and building ---------------------------------------------------------------------
def test_the_catalog_registers_the_supervised_distributions_and_builds_them_by_name():
    assert distribution_names() == SUPERVISED
    assert not set(SUPERVISED) & set(rl_family_names())
    for name in SUPERVISED:
        assert family_info(name).kind == "supervised"
    sinusoid = make_distribution("sinusoid", shots=5)
    assert isinstance(sinusoid, SinusoidRegression) and sinusoid.shots == 5 and sinusoid.kind == "supervised"


@pytest.mark.parametrize(
    ("name", "params", "needles"),
    [
        ("digits-rotations", {"ways": 9}, ["ways", "at most 8"]),
        ("digits-rotations", {"way": 5}, ["unknown parameter", "ways", "shots", "queries"]),
        ("sinusoid", {"amplitude_low": 5.0, "amplitude_high": 1.0}, ["amplitude_low", "amplitude_high"]),
        ("sinusoid", {"max_episode_steps": 10}, ["max_episode_steps", "unknown parameter"]),
        ("omniglot", {"shots": 5, "queries": 16}, ["shots + queries", "20"]),
        ("mini-imagenet", {"ways": 17}, ["ways", "at most 16"]),
        ("glyphs", {"shots": 5, "queries": 16}, ["shots + queries", "20"]),
        ("glyphs", {"ways": 101}, ["ways", "at most 100"]),
        ("glyphs", {"size": 4}, ["size", "at least 8"]),
        ("sinusoid", {"amplitude_high": float("nan")}, ["amplitude_high", "must be a finite number, got nan"]),
        ("sinusoid", {"input_low": float("-inf")}, ["input_low", "must be a finite number, got -inf"]),
    ],
)
def test_invalid_parameters_are_refused_with_the_bound(name, params, needles):
    with pytest.raises(TaskFamilyError) as err:
        make_distribution(name, **params)
    for needle in needles:
        assert needle in str(err.value)


def test_each_builder_refuses_the_other_kind():
    with pytest.raises(TaskFamilyError, match="make_distribution"):
        make_family("sinusoid")
    with pytest.raises(TaskFamilyError, match="make_family"):
        make_distribution("navigation2d")
    with pytest.raises(TaskFamilyError, match="digits-rotations"):
        make_distribution("digits")


def test_splits_are_train_val_test_and_others_are_refused(digits):
    sinusoid = SinusoidRegression()
    for dist in (digits, sinusoid):
        assert [t.split for s in SUPERVISED_SPLITS for t in dist.sample_tasks(1, np.random.default_rng(0), split=s)] \
            == list(SUPERVISED_SPLITS)
        with pytest.raises(TaskFamilyError, match="valid splits"):
            dist.sample_tasks(1, np.random.default_rng(0), split="validation")
        with pytest.raises(TaskFamilyError, match="positive integer"):
            dist.sample_tasks(0, np.random.default_rng(0))


# ---- sinusoid ----------------------------------------------------------------------------------------
def test_sinusoid_tasks_and_episodes_are_seeded_and_the_split_changes_the_stream():
    dist = SinusoidRegression()
    tasks_a, eps_a = _episodes(dist, 3)
    tasks_b, eps_b = _episodes(dist, 3)
    assert tasks_a == tasks_b and _same_episodes(eps_a, eps_b)
    tasks_c, _ = _episodes(dist, 4)
    assert [t.params for t in tasks_c] != [t.params for t in tasks_a]
    by_split = {s: [t.params for t in dist.sample_tasks(5, np.random.default_rng(3), split=s)]
                for s in SUPERVISED_SPLITS}
    assert by_split["train"] != by_split["test"] and by_split["train"] != by_split["val"] \
        and by_split["val"] != by_split["test"]


def test_sinusoid_targets_are_the_task_wave_and_the_draws_stay_in_the_papers_ranges():
    dist = SinusoidRegression()
    assert dist.input_shape == (1,) and dist.output_dim == 1
    assert (dist.amplitude_low, dist.amplitude_high, dist.phase_low, dist.phase_high) == (0.1, 5.0, 0.0, math.pi)
    tasks, episodes = _episodes(dist, 0, n=50)
    amplitudes = np.array([t.params["amplitude"] for t in tasks])
    phases = np.array([t.params["phase"] for t in tasks])
    assert ((0.1 <= amplitudes) & (amplitudes <= 5.0)).all() and ((0 <= phases) & (phases <= math.pi)).all()
    assert amplitudes.std() > 0.5 and phases.std() > 0.3  # the tasks differ
    for task, ep in zip(tasks, episodes, strict=True):
        assert ep.x_support.shape == (10, 1) and ep.y_support.shape == (10, 1)
        assert ep.x_query.shape == (10, 1) and ep.y_query.shape == (10, 1)
        assert ep.x_support.dtype == ep.y_query.dtype == np.float32 and not ep.classification
        for x, y in ((ep.x_support, ep.y_support), (ep.x_query, ep.y_query)):
            assert ((-5.0 <= x) & (x <= 5.0)).all()
            expected = task.params["amplitude"] * np.sin(x.astype(np.float64) - task.params["phase"])
            np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_sinusoid_episode_sizes_fall_back_to_the_distributions_and_can_be_given():
    dist = SinusoidRegression(shots=5, queries=7)
    task = dist.sample_tasks(1, np.random.default_rng(0))[0]
    ep = dist.episode(task, np.random.default_rng(0))
    assert ep.x_support.shape == (5, 1) and ep.x_query.shape == (7, 1)
    ep = dist.episode(task, np.random.default_rng(0), shots=2, queries=3)
    assert ep.x_support.shape == (2, 1) and ep.x_query.shape == (3, 1)
    with pytest.raises(TaskFamilyError, match="amplitude"):
        dist.episode(Task("sinusoid", "train", 0, {"phase": 0.0}), np.random.default_rng(0))


# ---- the N-way K-shot protocol -------------------------------------------------------------------------
def test_episodes_take_distinct_examples_of_the_tasks_classes_in_label_order():
    dist = Coded(ways=3, shots=2, queries=3)
    tasks, episodes = _episodes(dist, 0, n=30)
    orders = set()
    for task, ep in zip(tasks, episodes, strict=True):
        classes = task_classes(task)
        assert len(set(classes)) == 3 and set(classes) <= set(range(6))
        orders.add(classes)
        np.testing.assert_array_equal(ep.y_support, [0, 0, 1, 1, 2, 2])
        np.testing.assert_array_equal(ep.y_query, [0, 0, 0, 1, 1, 1, 2, 2, 2])
        for x, y in ((ep.x_support, ep.y_support), (ep.x_query, ep.y_query)):
            np.testing.assert_array_equal(x[:, 0], np.array(classes)[y])  # label i is the task's class i
        for label, cls in enumerate(classes):
            support = set(ep.x_support[ep.y_support == label, 1].astype(int))
            query = set(ep.x_query[ep.y_query == label, 1].astype(int))
            assert len(support) == 2 and len(query) == 3 and not support & query  # distinct, no overlap
            assert support | query <= set(range(dist.class_size(cls)))
    assert len(orders) > 20  # classes and their label assignment vary across tasks
    assert any(list(o) != sorted(o) for o in orders)


def test_an_episode_refuses_a_task_of_another_split_or_family():
    dist = Coded()
    with pytest.raises(TaskFamilyError, match="not in it"):
        dist.episode(Task("coded", "train", 0, {"classes": "0,9,1"}), np.random.default_rng(0))
    with pytest.raises(TaskFamilyError, match="coded"):
        dist.episode(Task("sinusoid", "train", 0, {"amplitude": 1.0, "phase": 0.0}), np.random.default_rng(0))
    with pytest.raises(TaskFamilyError, match="needs 8"):
        dist.episode(dist.sample_tasks(1, np.random.default_rng(0))[0], np.random.default_rng(0), shots=4, queries=4)


def test_split_sizes_are_the_published_ones_on_the_full_set_and_proportional_on_a_small_one():
    assert split_sizes(1623, train=1100, val=100, reference=1623) == (1100, 100, 423)
    assert split_sizes(6, train=1100, val=100, reference=1623) == (4, 1, 1)
    assert all(min(split_sizes(n, train=1100, val=100, reference=1623)) >= 1 for n in range(3, 50))
    with pytest.raises(TaskFamilyError, match="at least 3"):
        split_sizes(2, train=1100, val=100, reference=1623)


# ---- glyphs -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def glyphs() -> Glyphs:
    dist = make_distribution("glyphs", ways=5, shots=2, queries=3)
    assert isinstance(dist, Glyphs)
    return dist


def test_glyphs_split_is_omniglots_1100_100_423_disjoint_characters(glyphs):
    pools = _class_pools(glyphs)
    assert {s: len(p) for s, p in pools.items()} == {"train": 1100, "val": 100, "test": 423}
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"] and not pools["val"] & pools["test"]
    assert set().union(*pools.values()) == set(range(1623))
    assert {s: (min(p), max(p) + 1) for s, p in pools.items()} == GLYPHS_SPLIT
    for split in SUPERVISED_SPLITS:
        for task in glyphs.sample_tasks(20, np.random.default_rng(1), split=split):
            assert set(task_classes(task)) <= pools[split] and task.split == split


def test_glyphs_episodes_are_seeded_and_shaped_and_a_pickled_copy_draws_the_same(glyphs):
    tasks_a, eps_a = _episodes(glyphs, 7, split="test")
    tasks_b, eps_b = _episodes(pickle.loads(pickle.dumps(glyphs)), 7, split="test")
    assert tasks_a == tasks_b and _same_episodes(eps_a, eps_b)
    for episode in eps_a:
        assert episode.x_support.shape == (10, 1, 16, 16) and episode.x_query.shape == (15, 1, 16, 16)
        assert episode.x_support.dtype == np.float32
        assert 0.0 <= episode.x_query.min() and episode.x_query.max() <= 1.0
        assert list(episode.y_support) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # the drawings are fixed by the character and the drawer, not by the process or the call
    assert np.array_equal(draw_character(1234, 5), draw_character(1234, 5))
    assert not np.array_equal(draw_character(1234, 5), draw_character(1234, 6))


def test_glyph_drawings_are_inked_and_nearer_their_own_characters_drawings_than_others():
    images = np.stack([np.stack([draw_character(c, j) for j in range(20)]) for c in range(1200, 1240)])
    ink = images.reshape(40, 20, -1).sum(-1)
    assert ink.min() > 5.0, "a drawing with almost no ink"
    flat = images.reshape(40, 20, -1)
    within = np.mean([np.linalg.norm(flat[c, i] - flat[c, j]) for c in range(40) for i, j in ((0, 1), (2, 3), (4, 5))])
    between = np.mean([np.linalg.norm(flat[c, 0] - flat[(c + 1) % 40, 0]) for c in range(40)])
    assert within < 0.75 * between, (within, between)


def test_glyphs_size_sets_the_image_side():
    dist = make_distribution("glyphs", ways=3, shots=1, queries=1, size=28)
    assert dist.input_shape == (1, 28, 28)
    _, (episode, *_) = _episodes(dist, 0, split="val", n=1)
    assert episode.x_support.shape == (3, 1, 28, 28)


# ---- digits-rotations ------------------------------------------------------------------------------------
def _class_pools(dist: FewShotClassification) -> dict[str, set[int]]:
    return {s: set(dist.split_classes(s)) for s in SUPERVISED_SPLITS}


def test_digits_split_is_24_8_8_disjoint_classes_with_each_digits_rotations_together(digits):
    pools = _class_pools(digits)
    assert {s: len(p) for s, p in pools.items()} == {"train": 24, "val": 8, "test": 8}
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"] and not pools["val"] & pools["test"]
    assert set().union(*pools.values()) == set(range(40))
    for split, pool in pools.items():
        assert {unrotated_class(c)[0] for c in pool} == set(DIGITS_SPLIT[split])
        assert pool == {rotated_class(d, k) for d in DIGITS_SPLIT[split] for k in range(4)}
    for split in SUPERVISED_SPLITS:  # tasks stay in their pool
        for task in digits.sample_tasks(20, np.random.default_rng(1), split=split):
            assert set(task_classes(task)) <= pools[split] and task.split == split


def test_digits_tasks_and_episodes_are_seeded(digits):
    tasks_a, eps_a = _episodes(digits, 7, split="test")
    tasks_b, eps_b = _episodes(digits, 7, split="test")
    assert tasks_a == tasks_b and _same_episodes(eps_a, eps_b)
    tasks_c, eps_c = _episodes(digits, 8, split="test")
    assert tasks_c != tasks_a or not _same_episodes(eps_a, eps_c)


def test_digits_episodes_have_the_protocols_shapes_and_the_classes_images(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    base = {d: raw.images[raw.target == d] / 16.0 for d in range(10)}
    assert digits.input_shape == (1, 8, 8) and digits.output_dim == 5
    tasks, episodes = _episodes(digits, 0, n=3)
    for task, ep in zip(tasks, episodes, strict=True):
        assert ep.x_support.shape == (5, 1, 8, 8) and ep.x_query.shape == (75, 1, 8, 8)
        assert ep.x_support.dtype == np.float32 and ep.y_support.dtype == np.int64 and ep.classification
        assert set(ep.y_query.tolist()) == set(range(5)) and np.bincount(ep.y_query).tolist() == [15] * 5
        assert 0.0 <= ep.x_query.min() and ep.x_query.max() <= 1.0
        for x, y in ((ep.x_support, ep.y_support), (ep.x_query, ep.y_query)):
            for image, label in zip(x, y, strict=True):
                digit, k = unrotated_class(task_classes(task)[label])
                unrotated = np.rot90(image[0], -k)  # back to upright: one of the digit's images
                assert np.isclose(base[digit], unrotated, atol=1e-6).all(axis=(1, 2)).any()


def test_digits_rotations_really_rotate(digits):
    indices = np.arange(10)
    for digit in range(10):
        upright = digits.examples(rotated_class(digit, 0), indices)
        for k in range(1, 4):
            turned = digits.examples(rotated_class(digit, k), indices)
            np.testing.assert_array_equal(turned, np.rot90(upright, k, axes=(-2, -1)))
            assert not np.array_equal(turned, upright)


# ---- Omniglot (fixture in the published layout) ------------------------------------------------------------
def test_omniglot_fixture_loads_with_the_protocols_shapes_and_disjoint_splits(omniglot):
    pools = _class_pools(omniglot)
    assert {s: len(p) for s, p in pools.items()} == {"train": 16, "val": 4, "test": 4}  # 4/1/1 characters x 4
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"] and not pools["val"] & pools["test"]
    characters = {s: {unrotated_class(c)[0] for c in p} for s, p in pools.items()}
    assert not characters["train"] & characters["test"] and not characters["val"] & characters["test"]
    assert omniglot.input_shape == (1, 28, 28) and omniglot.output_dim == 3
    assert omniglot.class_name(rotated_class(5, 1)) == "Gamma/character02/rot90"
    tasks_a, eps_a = _episodes(omniglot, 0, split="test")
    tasks_b, eps_b = _episodes(omniglot, 0, split="test")
    assert tasks_a == tasks_b and _same_episodes(eps_a, eps_b)
    for task, ep in zip(tasks_a, eps_a, strict=True):
        assert set(task_classes(task)) <= pools["test"]
        assert ep.x_support.shape == (6, 1, 28, 28) and ep.x_query.shape == (6, 1, 28, 28)
        assert ep.x_support.dtype == np.float32 and ep.y_support.dtype == np.int64
        np.testing.assert_array_equal(ep.y_support, [0, 0, 1, 1, 2, 2])
        assert 0.0 <= ep.x_support.min() and ep.x_support.max() <= 1.0
        # strokes are 1, the white background 0 (inverted), as Finn et al.'s code reads Omniglot
        assert ep.x_support[:, 0, 0, 0].max() < 0.05 and ep.x_support.max() > 0.95
        for label in range(3):  # drawings of a class are not repeated between support and query
            support, query = ep.x_support[ep.y_support == label], ep.x_query[ep.y_query == label]
            assert not any(np.array_equal(s, q) for s in support for q in query)


def test_omniglot_rotations_really_rotate(omniglot):
    indices = np.arange(OMNIGLOT_DRAWINGS)
    for character in range(6):
        upright = omniglot.examples(rotated_class(character, 0), indices)
        for k in range(1, 4):
            turned = omniglot.examples(rotated_class(character, k), indices)
            np.testing.assert_array_equal(turned, np.rot90(upright, k, axes=(-2, -1)))
            assert not np.array_equal(turned, upright)


def test_omniglot_reads_each_image_once_and_a_pickled_copy_gives_the_same_episodes(omniglot):
    task = omniglot.sample_tasks(1, np.random.default_rng(0), split="train")[0]
    first = omniglot.episode(task, np.random.default_rng(0))
    cached = len(omniglot._cache)
    assert cached > 0
    again = omniglot.episode(task, np.random.default_rng(0))
    assert len(omniglot._cache) == cached and _same_episodes([first], [again])
    copy = pickle.loads(pickle.dumps(omniglot))
    assert len(copy._cache) == 0 and _same_episodes([first], [copy.episode(task, np.random.default_rng(0))])


def test_omniglot_is_found_under_metarl_data_dir(data_root, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_root))
    dist = make_distribution("omniglot", ways=2, shots=1, queries=1)
    assert isinstance(dist, Omniglot) and dist.root == data_root / "omniglot"


# ---- mini-ImageNet (fixture in the published layout) ---------------------------------------------------------
def test_mini_imagenet_fixture_loads_with_the_published_split_and_shapes(mini_imagenet):
    pools = _class_pools(mini_imagenet)
    labels = {s: sorted(mini_imagenet.class_name(c) for c in p) for s, p in pools.items()}
    assert labels == {"train": ["n01000001", "n01000002", "n01000003"], "val": ["n02000001", "n02000002"],
                      "test": ["n03000001", "n03000002"]}
    assert mini_imagenet.input_shape == (3, 84, 84)
    for split in SUPERVISED_SPLITS:
        tasks_a, eps_a = _episodes(mini_imagenet, 5, split=split, n=3)
        tasks_b, eps_b = _episodes(mini_imagenet, 5, split=split, n=3)
        assert tasks_a == tasks_b and _same_episodes(eps_a, eps_b)
        for task, ep in zip(tasks_a, eps_a, strict=True):
            assert set(task_classes(task)) <= pools[split]
            assert ep.x_support.shape == (2, 3, 84, 84) and ep.x_query.shape == (6, 3, 84, 84)
            assert ep.x_query.dtype == np.float32 and 0.0 <= ep.x_query.min() and ep.x_query.max() <= 1.0
            np.testing.assert_array_equal(ep.y_query, [0, 0, 0, 1, 1, 1])


def test_mini_imagenet_images_are_rgb_channels_first_and_resized_to_84(mini_imagenet, data_root):
    cls = next(c for c in mini_imagenet.split_classes("train") if mini_imagenet.class_name(c) == "n01000001")
    image = mini_imagenet.examples(cls, np.array([0, 1]))  # the first was saved at 100x90
    assert image.shape == (2, 3, 84, 84)
    saved = np.asarray(Image.open(data_root / "mini-imagenet" / "images" / "n0100000100000002.jpg").convert("RGB"))
    np.testing.assert_allclose(image[1], saved.transpose(2, 0, 1) / 255.0, atol=1e-6)


# ---- a missing directory or layout --------------------------------------------------------------------------
def test_a_missing_directory_names_the_path_and_the_layout(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    missing = tmp_path / "nowhere"
    for name, cls, layout in (("omniglot", Omniglot, OMNIGLOT_LAYOUT),
                              ("mini-imagenet", MiniImageNet, MINI_IMAGENET_LAYOUT)):
        with pytest.raises(TaskFamilyError) as err:
            make_distribution(name, data_dir=str(missing))
        assert str(missing) in str(err.value) and layout in str(err.value)
        with pytest.raises(TaskFamilyError) as err:
            cls()
        assert DATA_DIR_ENV in str(err.value) and "data_dir" in str(err.value) and layout in str(err.value)


def test_an_incomplete_layout_names_what_is_missing(tmp_path):
    (tmp_path / "omniglot" / "images_background").mkdir(parents=True)
    with pytest.raises(TaskFamilyError) as err:
        Omniglot(data_dir=str(tmp_path / "omniglot"))
    assert "images_evaluation" in str(err.value) and OMNIGLOT_LAYOUT in str(err.value)
    (tmp_path / "omniglot" / "images_evaluation").mkdir()
    with pytest.raises(TaskFamilyError, match="no character directories"):
        Omniglot(data_dir=str(tmp_path / "omniglot"))
    mini = tmp_path / "mini"
    (mini / "images").mkdir(parents=True)
    (mini / "train.csv").write_text("filename,label\na.jpg,n1\n")
    with pytest.raises(TaskFamilyError) as err:
        MiniImageNet(data_dir=str(mini))
    assert "val.csv, test.csv" in str(err.value) and str(mini) in str(err.value)


def test_mini_imagenet_refuses_a_class_in_two_splits_and_a_malformed_row(tmp_path):
    mini = tmp_path / "mini"
    (mini / "images").mkdir(parents=True)
    for split in SUPERVISED_SPLITS:
        (mini / f"{split}.csv").write_text("filename,label\na.jpg,n1\nb.jpg,n1\n")
    with pytest.raises(TaskFamilyError, match="both train.csv and val.csv"):
        MiniImageNet(ways=2, shots=1, queries=1, data_dir=str(mini))
    (mini / "val.csv").write_text("filename,label\na.jpg\n")
    with pytest.raises(TaskFamilyError, match="line 2"):
        MiniImageNet(ways=2, shots=1, queries=1, data_dir=str(mini))


def test_a_split_too_small_for_the_task_is_refused_at_construction(data_root):
    with pytest.raises(TaskFamilyError, match="val split has 4 classes"):
        Omniglot(ways=5, shots=1, queries=1, data_dir=str(data_root / "omniglot"))
    with pytest.raises(TaskFamilyError, match="only 5 examples"):
        Omniglot(ways=2, shots=3, queries=3, data_dir=str(data_root / "omniglot"))
