"""Derived targets and label-noise variants: exact bookkeeping, realised rates, determinism."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from arctique.classes import CLASS_IDS
from arctique.config import ConfigError, ForegroundNoiseConf, NoiseConf, SemanticNoiseConf
from arctique.compose import load_config
from arctique.io.dataset import Dataset
from arctique.labels.noise import cell_footprints, noisy_labels, three_class, touching_pairs
from arctique.commands.vary import main as vary_main

from .conftest import SMALL, run_cli


# Noise without outline changes: for the tests of class flips, merges and splits alone.
NO_OUTLINE_NOISE = ForegroundNoiseConf(dropout_prob=0, scale_prob=0, shift_prob=0, elastic_prob=0)


def grid_labels(n_side: int = 24, size: int = 8, touching: bool = True):
    """A grid of square instances (ids 1..n^2) with classes 1..5 in turn; no stack (1 empty slice)."""
    pitch = size if touching else size + 2
    instance = np.zeros((n_side * pitch, n_side * pitch), np.uint16)
    for k in range(n_side * n_side):
        y, x = divmod(k, n_side)
        instance[y * pitch: y * pitch + size, x * pitch: x * pitch + size] = k + 1
    classes = np.array([0] + [1 + k % 5 for k in range(n_side * n_side)], np.uint8)
    return instance, classes[instance], np.zeros((1,) + instance.shape, np.uint16)


def test_three_class_separates_touching_instances():
    instance, _, _ = grid_labels(4, 8, touching=True)
    tc = three_class(instance, border_px=2)
    assert set(np.unique(tc)) == {1, 2}  # the grid fills the image
    for y in range(instance.shape[0]):  # every row crossing from one instance to the next crosses a border
        row, lab = tc[y], instance[y]
        for x in np.nonzero(np.diff(lab.astype(int)))[0]:
            assert row[x] == 2 and row[x + 1] == 2
    interior = ((tc == 1) & (instance == 6)).sum()
    assert interior == 4 * 4  # an 8x8 square minus its 2 px border
    assert np.array_equal(tc > 0, instance > 0)  # the border lies inside the nuclei
    spaced, _, _ = grid_labels(4, 8, touching=False)
    assert np.array_equal(three_class(spaced, border_px=2) > 0, spaced > 0)


def noisy_class_of(instance: np.ndarray, noisy_semantic: np.ndarray) -> dict:
    """Each clean instance's class in a noisy semantic map, read from the pixels (one class per instance)."""
    out = {}
    for i in np.unique(instance[instance > 0]):
        values = np.unique(noisy_semantic[instance == i])
        assert len(values) == 1, f"instance {i} has several noisy classes"
        out[int(i)] = int(values[0])
    return out


def test_semantic_flip_rate_matches_the_level_and_touches_only_flipped_instances():
    instance, semantic, stack = grid_labels()
    cfg = NoiseConf(foreground=NO_OUTLINE_NOISE)
    variant = noisy_labels(instance, semantic, stack, seed=7, level=30, cfg=cfg)
    clean, noisy = noisy_class_of(instance, semantic), noisy_class_of(instance, variant.semantic)
    changed = {i for i in clean if noisy[i] != clean[i]}
    n = len(clean)
    rate = len(changed) / n  # from the noisy map itself
    assert abs(rate - 0.30) < 3 * np.sqrt(0.3 * 0.7 / n)
    assert variant.record["realised"]["semantic_flip"] == pytest.approx(rate, abs=1e-6)
    flips = variant.record["semantic_flips"]
    assert changed == {f["id"] for f in flips}
    assert all(f["class"] != f["noisy_class"] for f in flips)


def test_confusion_table_decides_the_wrong_class():
    instance, semantic, stack = grid_labels()
    cfg = NoiseConf(semantic=SemanticNoiseConf(flip_prob=1.0, confusion={"LYM": {"PLA": 1.0}}))
    flips = noisy_labels(instance, semantic, stack, seed=1, level=100, cfg=cfg).record["semantic_flips"]
    lym = [f for f in flips if f["class"] == "LYM"]
    assert len(lym) == (instance.max() + 2) // 5 and all(f["noisy_class"] == "PLA" for f in lym)


def test_merges_join_exactly_the_requested_share_of_touching_pairs():
    side = 10
    instance, semantic, stack = grid_labels(side, 6)
    # The grid's touching pairs, from its layout: right and lower neighbours.
    pairs = {(k + 1, k + 2) for k in range(side * side) if k % side < side - 1}
    pairs |= {(k + 1, k + 1 + side) for k in range(side * (side - 1))}
    assert {tuple(p) for p in touching_pairs(instance).tolist()} == pairs
    variant = noisy_labels(instance, semantic, stack, seed=3, level=25, cfg=NoiseConf(foreground=NO_OUTLINE_NOISE))
    # the noisy instance map is a coarsening of the clean one: no clean instance is split
    noisy_id = {}
    for i in range(1, side * side + 1):
        values = np.unique(variant.instance[instance == i])
        assert len(values) == 1
        noisy_id[i] = int(values[0])
    joined = {p for p in pairs if noisy_id[p[0]] == noisy_id[p[1]]}
    # Each requested merge joins one pair; pairs closing a cycle of merged cells come along.
    components = len(set(noisy_id.values()))
    requested = round(0.25 * len(pairs))
    assert side * side - components <= requested <= len(joined) <= requested + 4
    assert {tuple(m) for m in variant.record["merges"]} <= joined
    assert len(variant.record["merges"]) == requested


def test_foreground_distortions_are_applied_at_their_rates_with_independent_streams():
    """Cells far apart, each in its own tile: what happened to a cell is read from its tile of the
    noisy foreground, and must be what the record says."""
    cfg = replace(NoiseConf(), foreground=ForegroundNoiseConf(scale_px=2, shift_px=4, elastic_alpha_px=[5.0, 8.0]))
    side, size, gap = 24, 8, 16  # gap >= shift + scale + elastic reach: a tile holds one cell
    pitch = size + 2 * gap
    instance = np.zeros((side * pitch, side * pitch), np.uint16)
    for k in range(side * side):
        y, x = divmod(k, side)
        instance[y * pitch + gap: y * pitch + gap + size, x * pitch + gap: x * pitch + gap + size] = k + 1
    semantic = (instance > 0).astype(np.uint8)
    variant = noisy_labels(instance, semantic, np.zeros((1,) + instance.shape, np.uint16), seed=5, level=100, cfg=cfg)
    clean_tile = (instance[:pitch, :pitch] > 0)
    changed = 0
    for r in variant.record["foreground"]:
        y, x = divmod(r["id"] - 1, side)
        tile = variant.foreground[y * pitch:(y + 1) * pitch, x * pitch:(x + 1) * pitch].astype(bool)
        changed += not np.array_equal(tile, clean_tile)
        ops = [op for op in ("scale_px", "shift_px", "elastic") if r[op] is not None]
        if r["dropout"]:
            assert not tile.any(), r
        elif not ops:
            assert np.array_equal(tile, clean_tile), r
        elif ops == ["shift_px"]:
            assert np.array_equal(tile, np.roll(clean_tile, r["shift_px"], axis=(0, 1))), r
        elif ops == ["scale_px"]:
            grow = ndimage.binary_dilation if r["scale_px"] > 0 else ndimage.binary_erosion
            assert np.array_equal(tile, grow(clean_tile, iterations=abs(r["scale_px"]))), r
        elif ops == ["elastic"]:  # a warp moves the cell's outline, the cell stays
            assert tile.any() and not np.array_equal(tile, clean_tile), r
    n = side * side
    # Each of the four distortions at 0.25: a cell comes out unchanged with probability 0.75^4.
    expected = 1 - 0.75 ** 4
    assert abs(changed / n - expected) < 3 * np.sqrt(expected * (1 - expected) / n), changed / n
    # raising one probability leaves every other draw as it was
    more_shift = replace(cfg, foreground=replace(cfg.foreground, shift_prob=0.5))
    other = noisy_labels(instance, semantic, np.zeros((1,) + instance.shape, np.uint16), seed=5, level=100,
                         cfg=more_shift).record["foreground"]
    for a, b in zip(variant.record["foreground"], other):
        assert (a["dropout"], a["scale_px"], a["elastic"]) == (b["dropout"], b["scale_px"], b["elastic"])


def test_dropped_cells_leave_the_foreground():
    instance, semantic, stack = grid_labels(12, 8, touching=False)
    cfg = NoiseConf(foreground=ForegroundNoiseConf(dropout_prob=0.5, scale_prob=0, shift_prob=0, elastic_prob=0))
    variant = noisy_labels(instance, semantic, stack, seed=2, level=100, cfg=cfg)
    for r in variant.record["foreground"]:
        assert variant.foreground[instance == r["id"]].any() != r["dropout"]


def test_footprints_include_occluded_parts_from_the_stack():
    instance = np.zeros((20, 20), np.uint16)
    instance[2:8, 2:8] = 1
    stack = np.zeros((2, 20, 20), np.uint16)
    stack[1, 5:12, 5:12] = 1
    box, mask = cell_footprints(instance, stack)[1]
    assert mask.sum() == 36 + 49 - 9


def test_same_seed_and_level_give_identical_noise_and_levels_differ():
    instance, semantic, stack = grid_labels(12, 8)
    a = noisy_labels(instance, semantic, stack, seed=11, level=40, cfg=NoiseConf())
    b = noisy_labels(instance, semantic, stack, seed=11, level=40, cfg=NoiseConf())
    c = noisy_labels(instance, semantic, stack, seed=11, level=60, cfg=NoiseConf())
    for key in ("semantic", "instance", "three_class", "foreground"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert a.record == b.record and a.record["semantic_flips"] != c.record["semantic_flips"]


def test_invalid_noise_settings_are_rejected():
    with pytest.raises(ConfigError, match=r"noise.levels\[\]=150.0 is out of range: allowed \[0, 100\]"):
        load_config(["noise.levels=[20,150]"])
    with pytest.raises(ConfigError, match="noise.semantic.confusion.LYM.LYM"):
        load_config(["+noise.semantic.confusion.LYM={LYM: 1}"])


def test_noisy_labels_are_written_beside_the_clean_ones(tmp_path):
    run_cli(tmp_path, "seed=2", *SMALL, "noise.levels=[50]")
    root = tmp_path / "rendered"
    clean_instance = tifffile.imread(root / "masks/instance/2.tif")
    clean_semantic = tifffile.imread(root / "masks/semantic/2.tif")
    assert np.array_equal(tifffile.imread(root / "masks/foreground/2.tif"), (clean_instance > 0).astype(np.uint8))
    assert set(np.unique(tifffile.imread(root / "masks/instance_3class/2.tif"))) <= {0, 1, 2}
    record = json.loads((root / "metadata/noise_50/2.json").read_text())
    assert record["seed"] == 2 and record["level"] == 50 and record["noise"]["levels"] == [50]
    noisy_semantic = tifffile.imread(root / "masks/semantic_noise_50/2.tif")
    # cells whose outline the annotator left alone keep their pixels: there the classes differ
    # exactly on the flipped cells
    moved = {r["id"] for r in record["foreground"] if r["dropout"] or r["scale_px"] or r["shift_px"] or r["elastic"]}
    kept = np.isin(clean_instance, list(moved), invert=True) & (clean_instance > 0)
    flipped = {f["id"] for f in record["semantic_flips"]} - moved
    assert flipped == {int(i) for i in np.unique(clean_instance[kept & (noisy_semantic != clean_semantic)])}
    noisy_instance = tifffile.imread(root / "masks/instance_noise_50/2.tif")
    assert len(record["merges"]) == round(0.5 * record["touching_pairs"])
    # one annotation: every noisy map covers the same pixels, and moved cells moved
    nuclei = noisy_instance > 0
    assert not np.array_equal(nuclei, clean_instance > 0)
    for path in ("masks/instance_3class_noise_50/2.tif", "masks/foreground_noise_50/2.tif"):
        assert np.array_equal(tifffile.imread(root / path) > 0, nuclei), path
    assert np.array_equal(noisy_semantic > 0, nuclei)
    # deriving the same level later from the saved clean labels (arctique-vary, nothing rendered)
    # gives the same noisy labels, byte for byte
    vary_main([str(root), "noise.levels=[50]", "--name", "again"])
    again = root / "variations/again"
    for sub in ("images/image_2.png", "masks/instance/2.tif", "masks/semantic_noise_50/2.tif",
                "masks/instance_noise_50/2.tif", "masks/foreground_noise_50/2.tif", "metadata/noise_50/2.json"):
        assert (root / sub).read_bytes() == (again / sub).read_bytes(), sub
    assert json.loads((again / "parameters/2.json").read_text())["noise"]["levels"] == [50]
    assert [r["index"] for r in Dataset(again).manifest()] == ["2"]



@pytest.fixture(scope="module")
def traced_noise(export_dataset, tmp_path_factory):
    """Noise level 50 derived from the session's three rendered samples (nothing rendered), with every
    instance cut at level 100 and only drop-outs and shifts in the foreground, so that the written
    foreground can be rebuilt from its record."""
    out = tmp_path_factory.mktemp("traced") / "noise"
    vary_main([str(export_dataset), "noise.levels=[50]", "noise.instance.split_prob=1",
               "noise.foreground.scale_prob=0", "noise.foreground.elastic_prob=0", "--into", str(out)])
    return out


def _written_noise(root, i: int, level: int = 50):
    """The clean instance map, 3D stack, and the noisy instance and foreground maps and record of sample i."""
    stack = np.load(root / f"masks/instance_3d/{i}/{i}_stack.npy")
    return (tifffile.imread(root / f"masks/instance/{i}.tif"), stack,
            tifffile.imread(root / f"masks/instance_noise_{level}/{i}.tif"),
            tifffile.imread(root / f"masks/foreground_noise_{level}/{i}.tif"),
            json.loads((root / f"metadata/noise_{level}/{i}.json").read_text()))


def _annotated_cells(clean: np.ndarray, stack: np.ndarray, record: dict) -> np.ndarray:
    """The instance map the record describes before merges and splits, rebuilt independently for
    drop-outs and shifts: moved cells leave their pixels, then in id order each shifted cell's
    footprint (visible or in any slice) takes the pixels that are background by then."""
    both = np.concatenate([clean[None], stack])
    out = clean.astype(np.int64)
    moved = [r for r in record["foreground"] if r["dropout"] or r["shift_px"]]
    out[np.isin(out, [r["id"] for r in moved])] = 0
    h, w = clean.shape
    for r in sorted(moved, key=lambda r: r["id"]):
        assert r["scale_px"] is None and r["elastic"] is None
        if r["dropout"] or r["id"] not in clean:
            continue
        ys, xs = np.nonzero((both == r["id"]).any(0))
        ys, xs = ys + r["shift_px"][0], xs + r["shift_px"][1]
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        ys, xs = ys[inside], xs[inside]
        free = out[ys, xs] == 0
        out[ys[free], xs[free]] = r["id"]
    return out


@pytest.mark.parametrize("i", [3, 4, 5])
def test_written_noise_is_one_annotation_that_matches_its_record(traced_noise, i):
    """The written noisy foreground, 3-class and semantic maps all cover the cells as the record
    moved them; the semantic map gives each its recorded (flipped or clean) class."""
    clean, stack, _, fg, record = _written_noise(traced_noise, i)
    both = np.concatenate([clean[None], stack])
    assert {r["id"] for r in record["foreground"]} == set(np.unique(both)) - {0}
    assert any(r["dropout"] for r in record["foreground"]) and any(r["shift_px"] for r in record["foreground"])
    annotated = _annotated_cells(clean, stack, record)
    assert np.array_equal(fg.astype(bool), annotated > 0)
    assert np.array_equal(tifffile.imread(traced_noise / f"masks/instance_3class_noise_50/{i}.tif") > 0, annotated > 0)
    semantic = tifffile.imread(traced_noise / f"masks/semantic/{i}.tif")
    noisy_class = np.zeros(int(both.max()) + 1, np.uint8)
    noisy_class[clean.ravel()] = semantic.ravel()
    for f in record["semantic_flips"]:
        noisy_class[f["id"]] = CLASS_IDS[f["noisy_class"]]
    assert np.array_equal(tifffile.imread(traced_noise / f"masks/semantic_noise_50/{i}.tif"), noisy_class[annotated])


@pytest.mark.parametrize("i", [3, 4, 5])
def test_written_noisy_instances_carry_exactly_the_recorded_merges_and_splits(traced_noise, i):
    """Every recorded split id is in the noisy instance map, and its id count is that of the moved
    cells less the ids joined by the recorded merges (components of the merge graph) plus the splits."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    clean, stack, noisy, _, record = _written_noise(traced_noise, i)
    annotated_ids = set(np.unique(_annotated_cells(clean, stack, record))) - {0}
    noisy_ids = set(np.unique(noisy)) - {0}
    assert record["splits"] and record["merges"]
    for s in record["splits"]:
        assert s["new_id"] in noisy_ids and s["new_id"] > clean.max() and s["id"] in noisy_ids
    pairs = np.array(record["merges"], np.int64).reshape(-1, 2)
    joined = np.unique(pairs)
    index = np.searchsorted(joined, pairs)
    graph = coo_matrix((np.ones(len(pairs)), (index[:, 0], index[:, 1])), shape=(len(joined),) * 2)
    removed = len(joined) - connected_components(graph, directed=False)[0]
    assert len(noisy_ids) == len(annotated_ids) - removed + len(record["splits"])


def test_level_zero_is_the_clean_annotation():
    instance, semantic, stack = grid_labels(12, 8, touching=True)
    variant = noisy_labels(instance, semantic, stack, seed=4, level=0, cfg=NoiseConf())
    assert np.array_equal(variant.instance, instance) and np.array_equal(variant.semantic, semantic)
    assert np.array_equal(variant.foreground, (instance > 0).astype(np.uint8))
    assert np.array_equal(variant.three_class, three_class(instance, NoiseConf().border_px))
