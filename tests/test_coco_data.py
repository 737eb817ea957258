"""COCO loading on the real datasets: labels, crowds, empty images, resizing, flips, batching,
ground truth round-tripping through the evaluation at AP 100, and one-line data errors."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from retina.data import IMAGENET_MEAN, IMAGENET_STD, CocoDetection, DataError, collate, to_coco_results
from retina.evaluation.coco_eval import evaluate_coco

MIN_SIZE, MAX_SIZE = 512, 853


@pytest.fixture(scope="module")
def coco32_val(coco32: Path) -> CocoDetection:
    return CocoDetection(coco32 / "annotations" / "instances_train2017.json", coco32 / "images",
                         train=False, min_size=MIN_SIZE, max_size=MAX_SIZE)


@pytest.fixture(scope="module")
def coco32_samples(coco32_val: CocoDetection) -> list:
    return [coco32_val[i] for i in range(len(coco32_val))]


def _non_crowd_category_ids(coco, image_id: int) -> list:
    return sorted(a["category_id"] for a in coco.imgToAnns[image_id] if not a["iscrowd"])


# ----------------------------------------------------------------------------------------------
# coco32: labels, crowds, empty images, sizes, flips, batching


def test_sparse_category_ids_map_to_contiguous_labels_and_back(coco32_val, coco32_samples):
    ids = coco32_val.category_ids
    assert coco32_val.num_classes == 80 and ids == sorted(ids)
    # COCO skips ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83: label i <-> category_ids[i].
    assert (ids[0], ids[11], ids[16], ids[79]) == (1, 13, 18, 90)
    for sample in coco32_samples:
        labels = sample["labels"][~sample["iscrowd"]]
        assert labels.dtype == torch.int64 and (labels >= 0).all() and (labels < 80).all()
        assert sorted(ids[int(l)] for l in labels) == _non_crowd_category_ids(coco32_val.coco, sample["image_id"])


def test_crowd_boxes_are_flagged_iscrowd(coco32_val, coco32_samples):
    assert sum(int(s["iscrowd"].sum()) for s in coco32_samples) == 10
    sample = next(s for s in coco32_samples if s["image_id"] == 257)
    crowd_box = sample["boxes"][sample["iscrowd"]]
    x, y, w, h = 16, 301, 611, 178  # annotation 900100000257, a crowd of people
    expected = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32) * sample["scale"]
    torch.testing.assert_close(crowd_box, expected)


def test_images_without_boxes_load_with_empty_targets(coco32_samples):
    empty = {s["image_id"]: s for s in coco32_samples if len(s["boxes"]) == 0}
    assert sorted(empty) == [250, 508]
    for sample in empty.values():
        assert sample["boxes"].shape == (0, 4) and sample["boxes"].dtype == torch.float32
        assert sample["labels"].shape == (0,) and sample["iscrowd"].shape == (0,)


def test_resize_makes_shorter_side_min_size_unless_longer_side_would_exceed_max_size(coco32_samples):
    capped = 0
    for sample in coco32_samples:
        image = sample["image"]
        assert image.shape[0] == 3
        assert image.dtype == torch.uint8  # resized on the bytes, or the file's own
        height, width = sample["orig_size"]
        h, w = image.shape[1:]
        assert (h, w) == (round(height * sample["scale"]), round(width * sample["scale"]))
        if max(h, w) == MAX_SIZE and min(h, w) < MIN_SIZE:
            capped += 1
        else:
            assert min(h, w) == MIN_SIZE and max(h, w) <= MAX_SIZE
    assert capped >= 1  # the 640x218 image hits the cap; the others do not
    assert capped < len(coco32_samples)


def test_flip_mirrors_image_and_boxes_only_when_training(coco32):
    kwargs = dict(min_size=256, max_size=400)
    train = CocoDetection(coco32 / "annotations" / "instances_train2017.json", coco32 / "images", train=True, **kwargs)
    index = train.image_ids.index(74)
    plain, flipped = train[index], train[(index, True)]
    assert not plain["flipped"] and flipped["flipped"]
    w = plain["image"].shape[2]
    torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
    b = plain["boxes"]
    torch.testing.assert_close(flipped["boxes"], torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1))
    assert torch.equal(flipped["labels"], plain["labels"])

    evaluation = CocoDetection(train.annotations, train.images, train=False, **kwargs)
    not_flipped = evaluation[(index, True)]
    assert not not_flipped["flipped"] and torch.equal(not_flipped["boxes"], plain["boxes"])


def test_collate_pads_to_a_multiple_of_size_divisibility_and_keeps_image_sizes(coco32_samples):
    samples = coco32_samples[:4]
    sizes = [tuple(s["image"].shape[1:]) for s in samples]
    assert len(set(sizes)) > 1
    batch = collate(samples, size_divisibility=128)
    n, c, hp, wp = batch["images"].shape
    assert (n, c) == (4, 3) and hp % 128 == 0 and wp % 128 == 0
    assert hp - 128 < max(h for h, _ in sizes) <= hp and wp - 128 < max(w for _, w in sizes) <= wp
    assert batch["image_sizes"] == sizes
    from retina.data import normalize

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for padded, sample, (h, w) in zip(normalize(batch["images"], sizes), samples, sizes):
        torch.testing.assert_close(padded[:, :h, :w], (sample["image"].float() / 255 - mean) / std)
        assert padded[:, h:, :].abs().sum() == 0 and padded[:, :, w:].abs().sum() == 0
    assert batch["image_ids"] == [s["image_id"] for s in samples]
    assert batch["scales"] == [s["scale"] for s in samples]


def test_images_travel_as_bytes_and_normalize_to_the_same_floats(tmp_path):
    """Images stay uint8 through collate, resized or not (a quarter of the bytes from the loader's
    workers to the device); normalize() then gives the float path's tensor to the bit, padding
    included. A batch holding a float image takes the float path."""
    from retina.data import normalize
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    g = torch.Generator().manual_seed(0)
    for name, (w, h) in {"a.png": (64, 48), "b.png": (40, 64)}.items():
        pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(images / name)
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                       {"id": 2, "file_name": "b.png", "width": 40, "height": 64}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 10]}]}
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    own_size = CocoDetection(ann, images, train=True, min_size=40, max_size=64)  # scale 1 for b only
    exact = CocoDetection(ann, images, train=True, min_size=48, max_size=64)  # scale 1 for a only
    a, b = exact[(0, True)], own_size[1]
    assert a["image"].dtype == torch.uint8 and a["scale"] == 1.0 and a["flipped"]
    assert b["image"].dtype == torch.uint8 and b["scale"] == 1.0
    resized = own_size[0]
    assert resized["image"].dtype == torch.uint8 and resized["scale"] != 1.0

    batch = collate([a, b], size_divisibility=32)
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (2, 3, 64, 64)
    as_floats = [dict(s, image=s["image"].to(torch.float32).div_(255.0)) for s in (a, b)]
    reference = collate(as_floats, size_divisibility=32)["images"]  # the float path, as before
    assert torch.equal(normalize(batch["images"], batch["image_sizes"]), reference)
    assert normalize(reference, batch["image_sizes"]) is reference

    mixed = collate([a, dict(resized, image=resized["image"].to(torch.float32).div_(255.0))], size_divisibility=32)
    assert mixed["images"].dtype == torch.float32
    assert torch.equal(mixed["images"][0], reference[0])


# ----------------------------------------------------------------------------------------------
# ground truth as detections, through the project's own path


def _ground_truth_as_detections(samples, shift: float = 0.0) -> list:
    outputs = []
    for s in samples:
        keep = ~s["iscrowd"]
        boxes = s["boxes"][keep].clone()
        boxes[:, 0::2] += shift * (boxes[:, 2:3] - boxes[:, 0:1])
        outputs.append({"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": s["labels"][keep]})
    return outputs


def _evaluate(dataset, samples, outputs) -> dict:
    results = to_coco_results(outputs, [s["image_id"] for s in samples], [s["scale"] for s in samples],
                              dataset.category_ids)
    return evaluate_coco(dataset.coco, results)


def test_ground_truth_fed_back_as_detections_scores_ap_100(coco32_val, coco32_samples):
    metrics = _evaluate(coco32_val, coco32_samples, _ground_truth_as_detections(coco32_samples))
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert metrics[key] > 99.9, (key, metrics[key])


def test_ground_truth_shifted_by_30_percent_scores_clearly_lower(coco32_val, coco32_samples):
    metrics = _evaluate(coco32_val, coco32_samples, _ground_truth_as_detections(coco32_samples, shift=0.3))
    assert metrics["AP"] < 60.0 and metrics["AP75"] < 10.0


def test_coco_results_are_plain_python_in_original_pixels_with_sparse_category_ids():
    outputs = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "scores": torch.tensor([0.5]),
                "labels": torch.tensor([2])}]
    (result,) = to_coco_results(outputs, [7], [2.0], [1, 5, 90])
    assert result == {"image_id": 7, "category_id": 90, "bbox": [5.0, 10.0, 10.0, 20.0], "score": 0.5}
    assert all(type(v) in (int, float) for v in [result["image_id"], result["category_id"], *result["bbox"]])


# ----------------------------------------------------------------------------------------------
# bccd: degenerate boxes


def test_bccd_degenerate_boxes_are_dropped_and_reported(bccd: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="retina.data"):
        train = CocoDetection(bccd / "annotations" / "instances_train.json", bccd / "images",
                              train=True, min_size=480, max_size=640)
        val = CocoDetection(bccd / "annotations" / "instances_val.json", bccd / "images",
                            train=False, min_size=480, max_size=640)
    assert (train.num_degenerate_dropped, val.num_degenerate_dropped) == (2, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "instances_train.json" in warnings[0] and " 2 " in warnings[0]
    # gone from the ground truth as well: annotations 3153 and 3197 are the zero-size boxes
    assert 3153 not in train.coco.anns and 3197 not in train.coco.anns
    assert all(a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in train.coco.dataset["annotations"])


# ----------------------------------------------------------------------------------------------
# files a user can get wrong


def _tiny_dataset(root: Path, annotations: list | None = None, image_mode: str = "RGB") -> tuple[Path, Path]:
    """One 30x20 image and a JSON; returns (annotation file, image folder)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    Image.new(image_mode, (30, 20), color=128 if image_mode == "L" else (10, 200, 30)).save(images / "a.png")
    if annotations is None:
        annotations = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0}]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
            "annotations": annotations, "categories": [{"id": 7, "name": "thing"}]}
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path, images


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_truncated_json_raises_data_error_naming_the_file(tmp_path):
    path, images = _tiny_dataset(tmp_path)
    path.write_text(path.read_text()[:40])
    with pytest.raises(DataError) as excinfo:
        CocoDetection(path, images, train=False, min_size=20, max_size=40)
    assert str(path) in _one_line_error(excinfo)


def test_json_without_coco_keys_raises_data_error(tmp_path):
    path, images = _tiny_dataset(tmp_path)
    path.write_text(json.dumps({"images": [], "labels": []}))
    with pytest.raises(DataError) as excinfo:
        CocoDetection(path, images, train=False, min_size=20, max_size=40)
    message = _one_line_error(excinfo)
    assert str(path) in message and "'annotations'" in message and "'categories'" in message


def test_missing_image_file_raises_data_error_naming_it_and_the_annotation_file(tmp_path):
    path, images = _tiny_dataset(tmp_path)
    (images / "a.png").unlink()
    CocoDetection(path, images, train=False, min_size=20, max_size=40)  # a trial's dataset opens no file
    with pytest.raises(DataError) as excinfo:
        CocoDetection(path, images, train=False, min_size=20, max_size=40, verify_files=True)
    message = _one_line_error(excinfo)
    assert str(images / "a.png") in message and str(path) in message


def test_corrupt_image_raises_data_error_naming_it_at_construction(tmp_path):
    path, images = _tiny_dataset(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = "broken.jpg"
    path.write_text(json.dumps(data))
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    with pytest.raises(DataError) as excinfo:
        CocoDetection(path, images, train=False, min_size=20, max_size=40, verify_files=True)
    assert str(images / "broken.jpg") in _one_line_error(excinfo)


def test_unknown_category_id_raises_data_error_naming_the_annotation(tmp_path):
    path, images = _tiny_dataset(tmp_path, [{"id": 41, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5]}])
    with pytest.raises(DataError) as excinfo:
        CocoDetection(path, images, train=False, min_size=20, max_size=40)
    message = _one_line_error(excinfo)
    assert str(path) in message and "annotation 41" in message and "category_id=3" in message


def test_negative_width_is_a_data_error_naming_the_annotation(tmp_path):
    path, images = _tiny_dataset(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 3, -4, 5]},
    ])
    with pytest.raises(DataError) as excinfo:
        CocoDetection(path, images, train=False, min_size=20, max_size=40)
    message = _one_line_error(excinfo)
    assert str(path) in message and "annotation 2" in message and "negative width or height" in message


def test_zero_width_box_is_dropped_and_the_rest_kept(tmp_path):
    path, images = _tiny_dataset(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20, 3, 0, 5]},
    ])
    dataset = CocoDetection(path, images, train=False, min_size=20, max_size=40)
    assert dataset.num_degenerate_dropped == 1
    torch.testing.assert_close(dataset[0]["boxes"], torch.tensor([[2.0, 3.0, 12.0, 8.0]]))  # 30x20 is not resized


def test_grayscale_image_loads_with_three_channels(tmp_path):
    path, images = _tiny_dataset(tmp_path, image_mode="L")
    image = CocoDetection(path, images, train=False, min_size=40, max_size=80)[0]["image"]
    assert image.shape == (3, 40, 60)
    assert image.dtype == torch.uint8 and bool((image == 128).all())  # the grey level in all three channels
