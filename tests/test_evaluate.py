"""evaluate_coco: pycocotools' numbers in percent, quietly, and the cases pycocotools cannot take."""
from __future__ import annotations

import contextlib
import copy
import io
import math

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina.evaluation.coco_eval import AP_KEYS, evaluate_coco


def _ground_truth() -> COCO:
    """Two 100x100 images: image 1 has a cat (id 3) and a dog (id 17), image 2 a cat."""
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 30]},
        {"id": 2, "image_id": 1, "category_id": 17, "bbox": [50, 40, 30, 50]},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [20, 20, 60, 60]},
    ]
    for a in anns:
        a.update(area=a["bbox"][2] * a["bbox"][3], iscrowd=0)
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": anns,
        "categories": [{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# image 1: the cat found exactly, the dog missed by a box in the wrong place
ONE_RIGHT_ONE_WRONG = [
    {"image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 30], "score": 0.9},
    {"image_id": 1, "category_id": 17, "bbox": [0, 60, 30, 30], "score": 0.8},
]


def test_empty_results_give_zero_ap_without_crashing():
    metrics = evaluate_coco(_ground_truth(), [])
    assert all(metrics[key] == 0.0 for key in AP_KEYS)
    assert isinstance(metrics["summary"], str)


def test_one_right_one_wrong_detection_matches_cocoeval_run_directly():
    gt = _ground_truth()
    with contextlib.redirect_stdout(io.StringIO()):
        direct = COCOeval(gt, gt.loadRes(copy.deepcopy(ONE_RIGHT_ONE_WRONG)), iouType="bbox")
        direct.params.imgIds = [1]
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    metrics = evaluate_coco(gt, ONE_RIGHT_ONE_WRONG, image_ids=[1])
    for key, stat in zip(AP_KEYS, direct.stats):
        if stat < 0:  # no ground truth of that size
            assert math.isnan(metrics[key]), key
        else:
            assert metrics[key] == pytest.approx(100.0 * stat), key
    assert 0.0 < metrics["AP"] < 100.0
    assert "Average Precision" in metrics["summary"]


def test_image_ids_restrict_the_evaluation():
    gt = _ground_truth()
    perfect_on_image_1 = [
        {"image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 30], "score": 0.9},
        {"image_id": 1, "category_id": 17, "bbox": [50, 40, 30, 50], "score": 0.9},
    ]
    assert evaluate_coco(gt, perfect_on_image_1, image_ids=[1])["AP"] == pytest.approx(100.0)
    assert evaluate_coco(gt, perfect_on_image_1)["AP"] < 90.0  # image 2's cat is missed


def test_pycocotools_prints_nothing_and_results_are_left_unmodified(capsys):
    results = copy.deepcopy(ONE_RIGHT_ONE_WRONG)
    evaluate_coco(_ground_truth(), results)
    assert capsys.readouterr().out == ""
    assert results == ONE_RIGHT_ONE_WRONG
