"""Exports read back with each format's own conventions, compared pixel by pixel with the dataset's
label files after mapping and resampling (computed here, independently); the reader and its
PyTorch adapter; splits; option errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import arctique
from arctique.commands.export import main as export_main
from arctique.commands.vary import main as vary_main

# The public datasets' codes, by our class name, as their documentation gives them.
LIZARD = {"NEU": 1, "EPI": 2, "LYM": 3, "PLA": 4, "EOS": 5, "FIB": 6}
REFERENCE_V3 = {"EPI": 1, "PLA": 2, "LYM": 3, "EOS": 4, "FIB": 5}
PANNUKE_CHANNEL = {"EPI": 4, "PLA": 1, "LYM": 1, "EOS": 1, "NEU": 1, "FIB": 2}
SEEDS = (3, 4, 5)


def source(root: Path, seed: int, noise: str = ""):
    """The dataset's image, instance and semantic maps, read straight from its files."""
    suffix = f"_noise_{noise}" if noise else ""
    image = np.asarray(Image.open(root / f"images/image_{seed}.png").convert("RGB"))
    instance = tifffile.imread(root / f"masks/instance{suffix}/{seed}.tif").astype(np.int64)
    semantic = tifffile.imread(root / f"masks/semantic{suffix}/{seed}.tif").astype(np.int64)
    return image, instance, semantic


def name_table(root: Path, seed: int) -> dict:
    """Semantic value -> class name, from the sample's metadata."""
    meta = json.loads((root / f"metadata/{seed}.json").read_text())
    return {int(k): v for k, v in meta["sample"]["class_table"].items()}


def code_lut(root: Path, seed: int, codes: dict) -> np.ndarray:
    """Array: our semantic value -> the format's code (0 for classes the format lacks)."""
    table = name_table(root, seed)
    lut = np.zeros(max(table) + 1, np.int64)
    for value, name in table.items():
        lut[value] = codes.get(name, 0)
    return lut


def upsample(a: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(a, k, axis=0), k, axis=1)


def assert_same_instances(got: np.ndarray, expected: np.ndarray) -> None:
    """``got`` has ids 1..n, the same background and a one-to-one map to the ids of ``expected``."""
    got, expected = got.astype(np.int64), expected.astype(np.int64)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got == 0, expected == 0)
    ids = np.unique(got)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # contiguous, 0 background
    fg = got > 0
    pairs = np.unique(np.stack([got[fg], expected[fg]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    assert pairs.shape[1] == len(np.unique(expected[fg]))


def alignment_shift(image: np.ndarray, nuclei: np.ndarray, reach: int = 3) -> tuple:
    """The shift (dy, dx), within ``reach`` px, that best lines the image's darkness up with the
    nuclear mask (cross-correlation peak): (0, 0) when image and labels are aligned."""
    dark = -image.astype(np.float64).mean(-1)
    dark -= dark.mean()
    inner = (slice(reach, -reach),) * 2
    mask = nuclei.astype(np.float64)[inner]
    scores = {(dy, dx): float((np.roll(dark, (-dy, -dx), (0, 1))[inner] * mask).sum())
              for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)}
    return max(scores, key=scores.get)


def run_export(root: Path, out: Path, *args: str) -> Path:
    export_main([str(root), "--out", str(out), *args])
    return out


# ------------------------------------------------------------------------------------------- formats


def test_lizard_mat_at_half_the_pixel_size(export_dataset, tmp_path):
    from scipy.io import loadmat

    out = run_export(export_dataset, tmp_path / "lizard", "--format", "lizard", "--mpp", "0.5")
    for seed in SEEDS:
        image, instance, semantic = source(export_dataset, seed)
        mat = loadmat(out / f"lizard_labels/Lizard_Labels/Labels/arctique_{seed}.mat")
        inst = mat["inst_map"]
        assert inst.dtype == np.int32 and inst.shape == (256, 256)
        assert_same_instances(inst, upsample(instance, 2))
        n = int(inst.max())
        assert mat["id"].shape == mat["class"].shape == (n, 1) and mat["bbox"].shape == (n, 4)
        np.testing.assert_array_equal(mat["id"].ravel(), np.arange(1, n + 1))
        lizard = code_lut(export_dataset, seed, LIZARD)[upsample(semantic, 2)]
        per_pixel_class = np.zeros(n + 1, np.int64)
        per_pixel_class[mat["id"].ravel()] = mat["class"].ravel()
        np.testing.assert_array_equal(per_pixel_class[inst], np.where(inst > 0, lizard, 0))
        for row, i in enumerate(mat["id"].ravel()):
            ys, xs = np.nonzero(inst == i)
            np.testing.assert_array_equal(mat["bbox"][row], [ys.min(), ys.max() + 1, xs.min(), xs.max() + 1])
            np.testing.assert_allclose(mat["centroid"][row], [xs.mean(), ys.mean()])
        png = np.asarray(Image.open(out / f"lizard_images1/Lizard_Images1/arctique_{seed}.png"))
        assert png.shape == (256, 256, 3) and png.dtype == np.uint8
        assert np.abs(png.mean((0, 1)) - image.mean((0, 1))).max() < 1.0
        assert alignment_shift(image, instance > 0) == (0, 0)  # the check works on the source ...
        assert alignment_shift(png, inst > 0) == (0, 0)  # ... and the resampled image sits on its labels
    # the release layout as Bio-Image-Datasets' LizardDataset.__init__ assembles its paths
    # (lizard_images1/Lizard_Images1, lizard_labels/Lizard_Labels/Labels and .../info.csv)
    with open(out / "lizard_labels/Lizard_Labels/info.csv", newline="") as f:
        info = list(csv.DictReader(f))
    assert info == [{"Filename": f"arctique_{seed}", "Source": "arctique", "Split": "1"} for seed in SEEDS]


def test_conic_arrays_counts_and_patch_info(export_dataset, tmp_path):
    out = run_export(export_dataset, tmp_path / "conic", "--format", "conic", "--mpp", "0.5")
    images, labels = np.load(out / "images.npy"), np.load(out / "labels.npy")
    assert images.shape == (3, 256, 256, 3) and images.dtype == np.uint8
    assert labels.shape == (3, 256, 256, 2) and labels.dtype == np.uint16
    with open(out / "counts.csv", newline="") as f:
        counts = list(csv.DictReader(f))
    with open(out / "patch_info.csv", newline="") as f:
        info = list(csv.DictReader(f))
    assert list(counts[0]) == ["neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective"]
    assert list(info[0]) == ["patch_info"]
    assert [r["patch_info"] for r in info] == [f"arctique_{seed}-0000" for seed in SEEDS]
    # the CoNIC baseline's split groups patches by the source image before "-"
    assert [r["patch_info"].split("-")[0].split("_")[1] for r in info] == [str(s) for s in SEEDS]
    # split.csv as torch_em's CoNIC loader reads it (torch_em/data/datasets/histopathology/conic.py,
    # _create_split_list: [int(v) for v in split_df[split].dropna()]): the reader's split of seed 0
    with open(out / "split.csv", newline="") as f:
        table = list(csv.DictReader(f))
    for name in ("train", "test"):
        indices = [int(r[name]) for r in table if r[name] != ""]
        expected = arctique.Dataset(export_dataset, split=name, fractions="train=0.8,test=0.2").indices
        assert [SEEDS[k] for k in indices] == list(expected)
    for k, seed in enumerate(SEEDS):
        _, instance, semantic = source(export_dataset, seed)
        ref_instance = upsample(instance, 2)
        assert_same_instances(labels[k, ..., 0], ref_instance)
        lizard = code_lut(export_dataset, seed, LIZARD)[upsample(semantic, 2)]
        np.testing.assert_array_equal(labels[k, ..., 1], np.where(ref_instance > 0, lizard, 0))
        centre_ids = np.unique(ref_instance[16:240, 16:240])
        centre_ids = centre_ids[centre_ids > 0]
        class_of = {int(i): int(lizard[ref_instance == i][0]) for i in centre_ids}
        expected = {name: sum(1 for c in class_of.values() if c == code)
                    for code, name in enumerate(counts[0], start=1)}
        assert {name: int(v) for name, v in counts[k].items()} == expected
        assert sum(expected.values()) > 0


def test_pannuke_tiles_with_instances_in_their_class_channel(export_dataset, tmp_path):
    out = run_export(export_dataset, tmp_path / "pannuke", "--format", "pannuke", "--mpp", "0.25")
    images, masks, types = (np.load(out / f) for f in ("images/fold1/images.npy", "masks/fold1/masks.npy",
                                                        "images/fold1/types.npy"))
    assert images.shape == (12, 256, 256, 3) and masks.shape == (12, 256, 256, 6)
    assert list(types) == ["Colon"] * 12
    k = 0
    for seed in SEEDS:
        image, instance, semantic = source(export_dataset, seed)
        ref_instance, ref_semantic = upsample(instance, 4), upsample(semantic, 4)  # 512 px: 2 x 2 tiles
        channel_of = code_lut(export_dataset, seed, PANNUKE_CHANNEL)
        for y in (0, 256):
            for x in (0, 256):
                m = masks[k]
                crop = (slice(y, y + 256), slice(x, x + 256))
                assert_same_instances(m[..., :5].sum(-1), ref_instance[crop])
                assert np.all((m[..., :5] > 0).sum(-1) <= 1)  # one channel per pixel
                np.testing.assert_array_equal(m[..., 5], ref_instance[crop] == 0)
                for c in range(5):
                    np.testing.assert_array_equal(m[..., c] > 0, (ref_instance[crop] > 0)
                                                  & (channel_of[ref_semantic[crop]] == c))
                assert np.abs(images[k].mean((0, 1)) - upsample(image, 4)[crop].mean((0, 1))).max() < 2.0
                k += 1


def test_pannuke_splits_named_as_folds_are_laid_out_as_the_published_folds(export_dataset, tmp_path):
    """Each fold as the release's fold_k.zip holds it and pathml's PanNukeDataModule and CellViT's
    preparation read it: images/foldK/images.npy, images/foldK/types.npy, masks/foldK/masks.npy."""
    out = run_export(export_dataset, tmp_path / "p", "--format", "pannuke", "--mpp", "0.5",
                     "--split", "fold1=0.34,fold2=0.33,fold3=0.33")
    for k in (1, 2, 3):
        fold = out / f"fold{k}"
        images = np.load(fold / f"images/fold{k}/images.npy")
        masks = np.load(fold / f"masks/fold{k}/masks.npy")
        types = np.load(fold / f"images/fold{k}/types.npy")
        assert images.shape[1:] == (256, 256, 3) and masks.shape == images.shape[:3] + (6,)
        assert len(types) == len(images) == 1


def test_arctique_v3_16bit_pngs_read_by_pillow_and_scikit_image(export_dataset, tmp_path, capsys):
    from skimage.io import imread

    out = run_export(export_dataset, tmp_path / "v3", "--format", "arctique-v3")
    neutrophils = sum(1 for seed in SEEDS for c in arctique.Dataset(export_dataset).sample(seed).cells
                      if c["class_name"] == "NEU" and c["visible_area_px"] > 0)
    assert neutrophils > 0 and json.loads((out / "export.json").read_text())["left_out"] == {"NEU": neutrophils}
    assert f"arctique-v3 has no code for NEU: {neutrophils} visible nuclei left out" in capsys.readouterr().err
    for seed in SEEDS:
        image, instance, semantic = source(export_dataset, seed)
        with Image.open(out / f"images/img_{seed}.png") as im:
            np.testing.assert_array_equal(np.asarray(im), image)
            assert im.info["dpi"] == pytest.approx((25400 / 1.0,) * 2)  # the pixel size: 1 um
        maps = {}
        for kind in ("instance", "semantic"):
            path = out / f"masks/{kind}/{seed}.png"
            with Image.open(path) as im:
                assert im.mode == "I;16" and im.info["dpi"] == pytest.approx((25400.0, 25400.0))
                pil = np.asarray(im)
            ski = imread(path)
            assert ski.dtype == np.uint16
            np.testing.assert_array_equal(pil, ski)
            maps[kind] = ski
        v3 = code_lut(export_dataset, seed, REFERENCE_V3)[semantic]
        kept = np.where(v3 > 0, instance, 0)  # the v3 classes have no neutrophils
        assert_same_instances(maps["instance"], kept)
        np.testing.assert_array_equal(maps["semantic"], np.where(kept > 0, v3, 0))


def test_arctique_v3_tiles_have_numbers_the_reference_loaders_read_apart(export_dataset, tmp_path):
    """The reference lab's loaders take a file's last ``_``-separated token as its index (the
    reference's src/postprocessing/quality_control.py, get_index): every tile of every field must
    get its own."""
    out = run_export(export_dataset, tmp_path / "v3", "--format", "arctique-v3", "--tile", "64")
    images = sorted((out / "images").glob("*.png"))
    numbers = [int(p.stem.split("_")[-1]) for p in images]
    assert len(images) == 4 * len(SEEDS) and len(set(numbers)) == len(numbers)
    assert sorted(numbers) == sorted(seed * 1000 + k for seed in SEEDS for k in range(4))
    for n in numbers:
        assert (out / f"masks/semantic/{n}.png").is_file() and (out / f"masks/instance/{n}.png").is_file()


def test_hovernet_tiles_hold_rgb_instance_and_type(export_dataset, tmp_path, capsys):
    out = run_export(export_dataset, tmp_path / "hovernet", "--format", "hovernet", "--tile", "64")
    assert len(list(out.glob("*.npy"))) == 12
    assert "64 px patches serve HoVer-Net's no mode only" in capsys.readouterr().err  # smaller than any input
    for seed in SEEDS:
        image, instance, semantic = source(export_dataset, seed)
        lizard = code_lut(export_dataset, seed, LIZARD)[semantic]
        for k, (y, x) in enumerate([(0, 0), (0, 64), (64, 0), (64, 64)]):
            patch = np.load(out / f"{seed}_{k:03d}.npy")
            assert patch.shape == (64, 64, 5)
            crop = (slice(y, y + 64), slice(x, x + 64))
            np.testing.assert_array_equal(patch[..., :3], image[crop])
            assert_same_instances(patch[..., 3], instance[crop])
            np.testing.assert_array_equal(patch[..., 4], np.where(instance[crop] > 0, lizard[crop], 0))


def test_hovernet_mode_accepts_patches_as_large_as_its_input(export_dataset, tmp_path, capsys):
    out = run_export(export_dataset, tmp_path / "fast", "--format", "hovernet", "--mpp", "0.5", "--hovernet-mode", "fast")
    assert json.loads((out / "export.json").read_text())["hovernet_mode"] == "fast"
    assert all(np.load(p).shape[:2] == (256, 256) for p in out.glob("*.npy"))
    assert "note" not in capsys.readouterr().err


def test_coco_rle_masks_decode_to_the_instances(export_dataset, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    out = run_export(export_dataset, tmp_path / "coco", "--format", "coco")
    coco = COCO(str(out / "annotations.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert sorted(names.values()) == sorted(set(name_table(export_dataset, 3).values()) - {"background"})
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        seed = int(Path(info["file_name"]).stem)
        image, instance, semantic = source(export_dataset, seed)
        np.testing.assert_array_equal(np.asarray(Image.open(out / info["file_name"])), image)
        table = name_table(export_dataset, seed)
        decoded = np.zeros(instance.shape, np.int64)
        class_names = np.full(instance.shape, "", object)
        for k, ann in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=image_id)), start=1):
            m = mask_utils.decode(mask_utils.frPyObjects(ann["segmentation"], info["height"], info["width"]))
            m = m.astype(bool)
            assert not (decoded[m] > 0).any()  # nuclei do not overlap
            decoded[m] = k
            class_names[m] = names[ann["category_id"]]
            ys, xs = np.nonzero(m)
            assert ann["area"] == m.sum() and ann["iscrowd"] == 0
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert_same_instances(decoded, instance)
        fg = instance > 0
        assert list(class_names[fg]) == [table[v] for v in semantic[fg]]


def test_coco_rle_of_masks_touching_the_first_pixel():
    from pycocotools import mask as mask_utils

    from arctique.io.export.coco import rle

    rng = np.random.default_rng(0)
    for mask in (np.ones((5, 7), bool), np.eye(6, 4, dtype=bool), rng.random((9, 8)) > 0.5,
                 np.zeros((3, 3), bool)):
        decoded = mask_utils.decode(mask_utils.frPyObjects(rle(mask), *mask.shape))
        np.testing.assert_array_equal(decoded.astype(bool), mask)


# The generator's dependencies: the reader and the exports must work where none is installed.
GENERATOR_ONLY = ("bpy", "hydra", "omegaconf", "scipy", "submitit", "skimage", "sklearn")


def test_reader_and_exports_work_without_the_generators_dependencies(export_dataset, tmp_path):
    """With bpy, Hydra, OmegaConf and scipy unimportable, a sample reads whole and every format but
    Lizard (MATLAB files need scipy, and say so) exports."""
    code = (f"import sys\nfor name in {GENERATOR_ONLY!r}: sys.modules[name] = None\n"
            "import arctique\nfrom arctique.commands.export import main\n"
            f"s = arctique.Dataset({str(export_dataset)!r})[0]\n"
            "assert s.image.ndim == 3 and s.instance.max() > 0 and s.stack.ndim == 3 and s.cells\n"
            f"for fmt in ('arctique-v3', 'conic', 'pannuke', 'hovernet', 'coco'):\n"
            f"    main([{str(export_dataset)!r}, '--out', {str(tmp_path)!r} + '/' + fmt, '--format', fmt,\n"
            "          '--mpp', '0.5'])  # 256 px: one CoNIC or PanNuke patch\n"
            "try:\n"
            f"    main([{str(export_dataset)!r}, '--out', {str(tmp_path / 'lizard')!r}, '--format', 'lizard'])\n"
            "except SystemExit as e:\n"
            "    assert 'pip install scipy' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('the Lizard export ran without scipy')\n"
            "assert 'arctique.render' not in sys.modules and 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    for fmt in ("arctique-v3", "conic", "pannuke", "hovernet", "coco"):
        assert any((tmp_path / fmt).rglob("*.*")), fmt


def test_module_entry_point(export_dataset, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "arctique.commands.export", str(export_dataset), "--format", "coco",
                           "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c/annotations.json").is_file() and len(list((tmp_path / "c/images").glob("*.png"))) == 3


# ------------------------------------------------------------------------------- resampling and noise


@pytest.mark.parametrize("mpp", [1.5, 2.0])
def test_downsampling_keeps_ids_exact_and_nuclei_in_place_and_drops_vanished_ones(export_dataset, tmp_path, mpp):
    out = run_export(export_dataset, tmp_path / "down", "--format", "hovernet", "--mpp", str(mpp))
    vanished = 0
    for seed in SEEDS:
        image, instance, semantic = source(export_dataset, seed)
        patch = np.load(out / f"{seed}.npy")
        size = round(128 * 1.0 / mpp)
        assert patch.shape == (size, size, 5)
        # each new pixel takes the most frequent id at its 2 x 2 evenly spread points
        # (a quarter and three quarters of the way across, per axis), ties to the larger id
        points = np.floor(((np.arange(size)[:, None] + np.array([0.25, 0.75])) * mpp).ravel()).astype(int)
        votes = instance[np.ix_(points, points)]
        expected = np.zeros((size, size), instance.dtype)
        for y in range(size):
            for x in range(size):
                ids, counts = np.unique(votes[2 * y:2 * y + 2, 2 * x:2 * x + 2], return_counts=True)
                expected[y, x] = ids[counts == counts.max()].max()
        assert_same_instances(patch[..., 3], expected)
        lost = len(np.unique(instance)) - len(np.unique(expected))
        assert json.loads((out / "export.json").read_text())["vanished"][str(seed)] == lost
        vanished += lost
        class_of = np.zeros(int(instance.max()) + 1, np.int64)
        class_of[instance.ravel()] = semantic.ravel()
        lizard = code_lut(export_dataset, seed, LIZARD)[class_of[expected]]
        np.testing.assert_array_equal(patch[..., 4], np.where(expected > 0, lizard, 0))
        # the nuclei stay where they were: their centroids move by far less than a new pixel
        kept = np.intersect1d(np.unique(instance)[1:], np.unique(expected)[1:])
        moved = [(np.argwhere(expected == i).mean(0) + 0.5) * mpp - (np.argwhere(instance == i).mean(0) + 0.5)
                 for i in kept]
        assert np.abs(np.mean(moved, 0)).max() < 0.1
        assert np.abs(patch[..., :3].mean((0, 1)) - image.mean((0, 1))).max() < 1.0
        assert alignment_shift(patch[..., :3], patch[..., 3] > 0) == (0, 0)
    assert vanished > 0  # some nuclei have no pixel centre left and are not in the export


def test_image_downsampling_is_anti_aliased():
    """Stripes of period 2 px, above the Nyquist limit of a 1.5 px grid: plain sampling turns
    them into a coarse false pattern, the anti-aliasing filter into even grey."""
    from arctique.io.export.patches import smooth

    stripes = np.zeros((120, 120, 3), np.uint8)
    stripes[:, ::2] = 255
    out = smooth(stripes, 1.0, 1.5, 80).astype(float)[4:-4, 4:-4]  # away from the borders
    plain = stripes[:, np.floor((np.arange(80) + 0.5) * 1.5).astype(int)].astype(float)
    assert plain.std() > 100
    assert abs(out.mean() - 127.5) < 3 and out.std() < 10


def test_noise_level_exports_the_noisy_labels(export_dataset, tmp_path):
    from scipy.io import loadmat

    out = run_export(export_dataset, tmp_path / "noisy", "--format", "lizard", "--noise", "50")
    differs = 0
    for seed in SEEDS:
        _, clean, _ = source(export_dataset, seed)
        _, instance, semantic = source(export_dataset, seed, noise="50")
        mat = loadmat(out / f"lizard_labels/Lizard_Labels/Labels/arctique_{seed}.mat")
        assert_same_instances(mat["inst_map"], instance)
        lizard = code_lut(export_dataset, seed, LIZARD)
        for i, cls in zip(mat["id"].ravel(), mat["class"].ravel()):
            votes = np.bincount(lizard[semantic[mat["inst_map"] == i]])
            assert votes[cls] == votes.max()  # falsely merged nuclei take their majority class
        differs += len(np.unique(instance)) != len(np.unique(clean))
    assert differs > 0


# ------------------------------------------------------------------------------------------- splits


def split_members(out: Path) -> dict:
    return {split.name: sorted(p.stem for p in split.glob("*.npy")) for split in out.iterdir() if split.is_dir()}


def test_split_by_seed_is_reproducible_and_keeps_a_fields_tiles_together(export_dataset, tmp_path):
    args = ("--format", "hovernet", "--tile", "64", "--split", "train=0.34,val=0.33,test=0.33")
    first = split_members(run_export(export_dataset, tmp_path / "a", *args))
    again = split_members(run_export(export_dataset, tmp_path / "b", *args))
    assert first == again
    for name in first:
        assert (tmp_path / "a" / name / first[name][0]).with_suffix(".npy").read_bytes() == \
            (tmp_path / "b" / name / first[name][0]).with_suffix(".npy").read_bytes()
    assert set(first) == {"train", "val", "test"}
    seeds_of = {name: {p.split("_")[0] for p in patches} for name, patches in first.items()}
    assert all(len(s) == 1 for s in seeds_of.values())  # one sample each, with all 4 of its tiles
    assert all(len(p) == 4 for p in first.values())
    assert set().union(*seeds_of.values()) == {str(s) for s in SEEDS}
    assignments = {tuple(sorted((n, min(s)) for n, s in seeds_of.items()))}
    for split_seed in range(1, 8):
        other = split_members(run_export(export_dataset, tmp_path / f"s{split_seed}", *args,
                                         "--split-seed", str(split_seed)))
        assignments.add(tuple(sorted((n, p[0].split("_")[0]) for n, p in other.items())))
    assert len(assignments) > 1  # the split seed shuffles


# ------------------------------------------------------------------------------------ option errors


@pytest.mark.parametrize("args, says", [
    (["--format", "lizard", "--mpp", "0"], "--mpp must be a finite number > 0"),
    (["--format", "lizard", "--mpp", "inf"], "--mpp must be a finite number > 0"),
    (["--format", "lizard", "--mpp", "0.001"], "--mpp 0.001: sample 3 would be 128000 px per side"),
    (["--format", "conic", "--tile", "128", "--mpp", "0.5"], "--tile: conic patches are 256 px"),
    (["--format", "conic"], "--tile 256: sample 3 is 128 px"),
    (["--format", "arctique-v3", "--tile", "2"], "--tile 2: sample 3 would be 4096 tiles, more than the 1000"),
    # hover_net's FileLoader crops the mode's input (config act_shape: original 270, fast 256 px)
    # from each training patch: a smaller patch cannot serve that mode
    (["--format", "hovernet", "--hovernet-mode", "fast"], "--hovernet-mode fast: sample 3 gives 128 px patches"),
    (["--format", "coco", "--hovernet-mode", "fast"], "--hovernet-mode: 'fast' needs --format hovernet"),
    (["--format", "lizard", "--split", "train=0.5,val=0.2"], "--split: fractions must sum to 1"),
    (["--format", "lizard", "--split", "train"], "--split: 'train' is not NAME=FRACTION"),
    (["--format", "lizard", "--split", "../c=0.5,d=0.5"], "--split='../c' is not a folder name"),
    (["--format", "lizard", "--noise", "20"], "noise level 20 is missing"),
])
def test_bad_options_stop_with_one_line_before_writing(export_dataset, tmp_path, capsys, args, says):
    with pytest.raises(SystemExit) as exit_:
        export_main([str(export_dataset), "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and says in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_a_folder_with_files_is_not_overwritten(export_dataset, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x/keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        export_main([str(export_dataset), "--out", str(tmp_path / "x"), "--format", "coco"])
    assert f"--out: {tmp_path / 'x'} is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["keep.txt"]


# -------------------------------------------------------------------------------------------- reader


def test_reader_gives_each_sample_and_the_class_table(export_dataset):
    data = arctique.Dataset(export_dataset)
    assert len(data) == 3 and data.indices == SEEDS
    assert {str(k): v for k, v in data.class_table.items()} == json.loads(
        (export_dataset / "metadata/3.json").read_text())["sample"]["class_table"]
    for s in data:
        assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
        assert s.tissue.shape == (128, 128) and s.stack.shape == (4, 128, 128)
        assert s.mpp == 1.0
        assert int(s.instance.max()) == len(s.cells)  # one table row per id
        for row in s.cells:
            on = s.instance == row["id"]
            assert on.sum() == row["visible_area_px"]
            assert set(np.unique(s.semantic[on])) <= {row["class_id"]}
            assert (s.stack == row["id"]).sum() == row["voxels"]
    noisy = arctique.Dataset(export_dataset, noise=50)
    assert all(not np.array_equal(n.instance, c.instance) for n, c in zip(noisy, data))
    with pytest.raises(ValueError, match="levels written: 50"):
        arctique.Dataset(export_dataset, noise=20)


def test_reader_gives_every_label_map_and_the_class_posterior(export_dataset):
    """The ambiguity maps, the cytoplasm, the foreground and 3-class maps and the per-pixel class
    posterior come with each sample, consistent with the nuclei they describe."""
    for s in arctique.Dataset(export_dataset):
        nuclei = s.instance > 0
        assert np.array_equal(s.foreground.astype(bool), nuclei) and np.array_equal(s.three_class > 0, nuclei)
        assert s.soft.dtype == np.float32 and s.soft.min() >= 0 and s.soft.max() <= 1 and (s.soft[nuclei] > 0).all()
        assert np.array_equal(s.overlap > 0, nuclei) and (s.soft_instances[nuclei] >= 1).all()
        assert np.isnan(s.defocus[~nuclei]).all() and np.isfinite(s.defocus[nuclei]).all()
        assert set(np.unique(s.cytoplasm)) - {0} <= {c["id"] for c in s.cells}
        posterior = s.class_posterior
        assert posterior.shape == s.instance.shape + (len(s.cells[0]["class_posterior"]) + 1,)
        np.testing.assert_allclose(posterior.sum(-1), 1, atol=1e-5)
        assert np.array_equal(posterior.argmax(-1), s.semantic)  # one-hot: no lym_to_pla here
        assert s.noise_record is None


@pytest.fixture(scope="module")
def annotated(export_dataset, tmp_path_factory):
    """Two simulated annotators of noise level 50, derived from the session's three samples."""
    out = tmp_path_factory.mktemp("annotated") / "data"
    vary_main([str(export_dataset), "noise.levels=[50]", "noise.annotators=2", "--into", str(out)])
    return out


def test_reader_gives_each_annotator_and_refuses_a_folder_name_as_level(annotated):
    first, second = (arctique.Dataset(annotated, noise=50, annotator=k) for k in (0, 1))
    for a, b in zip(first, second):
        assert np.array_equal(a.instance, tifffile.imread(annotated / f"masks/instance_noise_50_annotator_0/{a.index}.tif"))
        assert np.array_equal(a.foreground, tifffile.imread(annotated / f"masks/foreground_noise_50_annotator_0/{a.index}.tif"))
        assert a.noise_record["annotator"] == 0 and b.noise_record["annotator"] == 1
        assert not np.array_equal(a.semantic, b.semantic) or not np.array_equal(a.instance, b.instance)
        assert np.array_equal(a.stack, b.stack) and a.cells == b.cells  # the clean truth is shared
    with pytest.raises(ValueError, match="'50_annotator_0' is not a noise level"):
        arctique.Dataset(annotated, noise="50_annotator_0")
    with pytest.raises(ValueError, match="noise level 50 annotator 2 is missing"):
        arctique.Dataset(annotated, noise=50, annotator=2)


def test_annotator_export_holds_that_annotators_nuclei(annotated, tmp_path):
    out = run_export(annotated, tmp_path / "a1", "--format", "hovernet", "--noise", "50", "--annotator", "1")
    assert json.loads((out / "export.json").read_text())["annotator"] == 1
    for s in arctique.Dataset(annotated, noise=50, annotator=1):
        patch = np.load(out / f"{s.index}.npy")
        assert_same_instances(patch[..., 3], s.instance)


def test_slices_and_splits_as_the_export_cuts_them(export_dataset, tmp_path):
    data = arctique.Dataset(export_dataset)
    assert data[1:].indices == SEEDS[1:] and len(data[::2]) == 2 and data[-1].index == SEEDS[-1]
    assert [s.index for s in data[1:]] == list(SEEDS[1:])
    fractions = "train=0.67,test=0.33"
    out = run_export(export_dataset, tmp_path / "s", "--format", "hovernet", "--split", fractions, "--split-seed", "4")
    written = json.loads((out / "export.json").read_text())["samples"]
    for name in ("train", "test"):
        part = arctique.Dataset(export_dataset, split=name, fractions=fractions, split_seed=4)
        assert list(part.indices) == sorted(int(i) for i, n in written.items() if n == name)
    with pytest.raises(ValueError, match="split='val' is not one of train, test"):
        arctique.Dataset(export_dataset, split="val", fractions=fractions)


def test_torch_adapter(export_dataset):
    torch = pytest.importorskip("torch", reason="torch is not installed: the [torch] extra is optional "
                                                "and not in the test extra")
    from arctique.io.torch_dataset import TorchDataset

    data = arctique.Dataset(export_dataset)
    loader = torch.utils.data.DataLoader(TorchDataset(data), batch_size=3)
    batch = next(iter(loader))
    full = TorchDataset(data, fields=("soft", "class_posterior", "tissue", "defocus", "stack"))[0]
    assert full["class_posterior"].shape[1:] == (128, 128) and full["soft"].dtype == torch.float32
    np.testing.assert_array_equal(full["stack"].numpy(), data[0].stack)
    with pytest.raises(ValueError, match="fields: bogus"):
        TorchDataset(data, fields=("bogus",))
    assert batch["image"].shape == (3, 3, 128, 128) and batch["image"].dtype == torch.float32
    assert batch["instance"].dtype == torch.int64 and batch["index"].tolist() == list(SEEDS)
    for k, s in enumerate(data):
        np.testing.assert_array_equal(batch["semantic"][k].numpy(), s.semantic)
        np.testing.assert_allclose(batch["image"][k].numpy().transpose(1, 2, 0) * 255, s.image, atol=1e-3)


# ------------------------------------------------------------------------------ interruption and damage


def test_an_interrupted_export_leaves_nothing_and_runs_again(export_dataset, tmp_path, monkeypatch, capsys):
    """Stopped at its second patch, the export leaves neither ``--out`` nor its staging folder (a
    stale one of a dead process is removed too), and the same command then completes."""
    from arctique.io.export.hovernet import HoverNet

    stale = tmp_path / ".out.partial-999999999"
    stale.mkdir()
    real_add, added = HoverNet.add, []

    def stopped_at_the_second_patch(self, patch):
        if len(added) == 1:
            raise KeyboardInterrupt
        added.append(patch.name)
        real_add(self, patch)

    monkeypatch.setattr(HoverNet, "add", stopped_at_the_second_patch)
    with pytest.raises(SystemExit) as exit_:
        export_main([str(export_dataset), "--out", str(tmp_path / "out"), "--format", "hovernet"])
    assert exit_.value.code == 130 and "interrupted; nothing was written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(HoverNet, "add", real_add)
    record = json.loads((run_export(export_dataset, tmp_path / "out", "--format", "hovernet") / "export.json").read_text())
    assert len(record["patches"]) == len(SEEDS) and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_damaged_sample_or_a_file_as_out_is_one_line_and_nothing_is_written(export_dataset, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(export_dataset, damaged)
    (damaged / "masks/semantic/4.tif").unlink()
    with pytest.raises(SystemExit) as exit_:
        export_main([str(damaged), "--out", str(tmp_path / "x"), "--format", "coco"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "sample 4 of" in err and "masks/semantic/4.tif" in err
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial-*"))
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(SystemExit) as exit_:
        export_main([str(export_dataset), "--out", str(tmp_path / "file"), "--format", "coco"])
    assert exit_.value.code == 2 and "is a file; choose a new folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "keep me"
