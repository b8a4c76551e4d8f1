"""Readers, augmentations, distillation and the training loop, on real frames at tiny sizes.

The distilled folder is made by the real teachers (yolox-nano + twinlitenet from the shared
models) on five real frames; training runs a few steps at 96x64 on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.augment import Augment, augment, crop_and_resize, dashboard_band, hood
from models.checkpoint import CheckpointError, load_checkpoint
from models.data import (
    CLASS_ID,
    DataError,
    Record,
    Sample,
    labeled_assets,
    load,
    read_bdd,
    read_camvid_road,
    read_kitti,
    read_labelled,
    read_sim_recording,
)
from models.distill import distill, plan
from models.train import StepBatches, add_arguments, source_balanced
from perception.cli import main as cli_main

NO_HOOD = Augment(hood=0.0)  # geometry alone: the hood clears masks, not boxes
TINY = ["--width", "96", "--height", "64", "--batch", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def tiny_drives(drives: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A drives folder with the shared layout and a handful of frames (symlinks)."""
    root = tmp_path_factory.mktemp("drives")
    picks = ["unlabeled/camvid_cambridge/0016E5_00390.jpg",
             "unlabeled/camvid_cambridge/0016E5_05250.jpg",
             "unlabeled/nuscenes_boston/a_000001.jpg",
             "unlabeled/camvid_cambridge/0006R0_f00930.jpg",
             "bdd100k_frames/yolop/0ace96c3-48481887.jpg",
             "labeled/bdd100k_drivable/0ace96c3-48481887_drivable_id.png"]
    for pick in picks:
        target = root / pick
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(drives / pick)
    return root


@pytest.fixture(scope="module")
def distilled(tiny_drives: Path, models_mirror: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("distilled")
    out = base / "frames"
    distill(tiny_drives, out, base / "cache")
    return out


def train_cli(*options: str) -> int:
    return cli_main(["train", *options])


def test_labeled_assets_match_the_manifest(drives: Path) -> None:
    sets = labeled_assets(drives)
    assert {k: len(v) for k, v in sets.items()} == {
        "kitti_boxes": 21, "camvid_road": 30, "bdd_drivable": 6, "kitti_road": 2,
        "tusimple_lanes": 16}


def test_distilled_split_by_source_and_cached(distilled: Path, tiny_drives: Path) -> None:
    index = json.loads((distilled / "index.json").read_text())
    splits = {f["source"]: f["split"] for f in index["frames"]}
    assert splits["camvid/0016E5"] == "train" and splits["camvid/0006R0"] == "val"
    assert splits["bdd/0ace96c3-48481887"] == "val"  # has ground truth: held out
    with np.load(distilled / index["frames"][0]["labels"]) as labels:
        assert labels["drivable"].shape == (360, 640) and labels["drivable"].any()
    cache = distilled.parent / "cache"
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    distill(tiny_drives, distilled.parent / "again", cache)  # all cached: nothing relabelled
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    refs = plan(tiny_drives)
    assert len({(r.source, r.split) for r in refs}) == len({r.source for r in refs})


@pytest.mark.parametrize("folder", ["comma10k", "kitti_object_cropped", "camvid_road",
                                    "camvid_seq05vd_more", "bdd100k_val_drivable", "kitti_road",
                                    "tusimple/sample_512x288", "tusimple/lanenet_examples"])
def test_distilled_sources_are_the_labelled_readers_sources(drives: Path, folder: str) -> None:
    """A frame has one source id whichever way it is read, so `perception train --labelled`
    drops every frame of a held-out source (comma10k once leaked: one id per file in the
    distilled folder, one per route in its reader)."""
    planned = {ref.path.resolve(): ref for ref in plan(drives)}
    records = read_labelled(drives / "labeled" / folder)
    matched = [(record.source, planned[record.image.resolve()].source) for record in records
               if record.image.resolve() in planned]
    assert matched, f"no frame of {folder} is distilled"
    assert all(read == distilled for read, distilled in matched), matched


def test_augment_keeps_boxes_masks_and_lanes_together() -> None:
    image = np.zeros((90, 160, 3), np.uint8)
    mask = np.zeros((90, 160), np.uint8)
    mask[30:60, 100:140] = 1
    sample = Sample(image, np.array([[100, 30, 140, 60]], np.float32), np.array([2]),
                    mask, mask.copy())
    for seed in range(20):
        out = augment(sample, (96, 64), np.random.default_rng(seed), NO_HOOD)
        again = augment(sample, (96, 64), np.random.default_rng(seed), NO_HOOD)
        assert np.array_equal(out.image, again.image)  # seedable
        ys, xs = np.nonzero(out.drivable)
        if len(out.boxes) == 0:
            assert len(xs) == 0 or (xs.max() - xs.min() < 3 or ys.max() - ys.min() < 3)
            continue
        assert np.array_equal(out.drivable, out.lanes)
        x1, y1, x2, y2 = out.boxes[0]
        assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
        assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5
    flipped = crop_and_resize(sample, (0, 0, 160, 90), (160, 90), flip=True)
    assert flipped.boxes[0].tolist() == [20, 30, 60, 60] and flipped.drivable[30:60, 20:60].all()


def test_synthetic_hood_clears_the_road_under_it() -> None:
    image = np.full((90, 160, 3), 128, np.uint8)
    road = np.zeros((90, 160), np.uint8)
    road[40:, :] = 1
    boxes = np.array([[10, 10, 40, 30], [60, 75, 100, 90]], np.float32)  # far car; one on the hood
    sample = Sample(image, boxes, np.array([2, 0]), road, road.copy())
    for seed in range(20):
        out = hood(sample, np.random.default_rng(seed))
        covered = np.any(out.image != 128, axis=2)
        assert covered[-1].all() and not covered[:90 - 26].any()  # the bottom 6-25 %
        assert not out.drivable[covered].any() and not out.lanes[covered].any()
        assert out.drivable[40:][~covered[40:]].all()  # the road above the hood stays
        assert out.boxes.tolist()[0] == [10, 10, 40, 30] and len(out.boxes) in (1, 2)
        assert len(out.boxes) == 1 or covered[75:, 60:100].mean() <= 0.5


def test_dashboard_is_dark_plastic() -> None:
    for seed in range(20):
        band = dashboard_band(160, 90, np.random.default_rng(seed))
        assert band.shape == (90, 160, 3) and band.min() >= 0 and band.max() <= 255
        assert np.median(band) < 90  # near black, whatever the vents and glare add


def test_train_a_few_steps_resume_and_evaluate(distilled: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_cli("--data", str(distilled), "--out", str(straight), "--steps", "4",
                     "--eval-every", "4", *TINY) == 0
    assert train_cli("--data", str(distilled), "--out", str(split), "--steps", "2", *TINY) == 0
    assert train_cli("--data", str(distilled), "--out", str(split), "--steps", "4", "--resume",
                     *TINY) == 0
    tiny_other_batch = [*TINY[:5], "3", *TINY[6:]]
    assert train_cli("--data", str(distilled), "--out", str(split), "--steps", "6", "--resume",
                     *tiny_other_batch) == 2  # other batches than the run drew: refused
    assert train_cli("--data", str(distilled), "--out", str(split), "--steps", "6", "--resume",
                     "--source-balance", "0.5", *TINY) == 2  # so are other frames
    assert "--source-balance 0.0 (now 0.5)" in capsys.readouterr().err
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-5), key
    assert set(a["metrics"]) == {"val/drivable_iou", "val/lane_iou", "val/box_map50"}
    assert any((straight / "tb").iterdir())


def test_source_balance_shares_draws_by_dataset_size(tmp_path: Path) -> None:
    records = ([Record(tmp_path / f"c{i}.jpg", "camvid/0016E5") for i in range(300)]
               + [Record(tmp_path / f"b{i}.jpg", f"bdd/{i}") for i in range(12)]
               + [Record(tmp_path / f"k{i}.jpg", f"kitti/{i}") for i in range(3)])
    assert source_balanced(records, 0.0) is None  # uniform over frames, as before

    def shares(balance: float) -> list[float]:
        probabilities = source_balanced(records, balance)
        return [probabilities[:300].sum(), probabilities[300:312].sum(), probabilities[312:].sum()]

    assert np.allclose(shares(1.0), 1 / 3)
    assert np.allclose(shares(0.5), np.sqrt([300, 12, 3]) / np.sqrt([300, 12, 3]).sum())
    draws = [index for batch in StepBatches(len(records), 64, 0, 0, 50,
                                            source_balanced(records, 1.0)) for index, _ in batch]
    assert 0.28 < np.mean(np.array(draws) >= 312) < 0.39  # kitti's 3 frames: a third of draws
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one line, exit 2
        train_cli("--source-balance", "1.5", "--out", str(tmp_path / "run"))
    assert exit_info.value.code == 2
    assert not (tmp_path / "run").exists()


def test_mixed_supervised_labels_train(distilled: Path, drives: Path, tmp_path: Path) -> None:
    kitti = tmp_path / "kitti"
    for part, suffix in (("image_2", ".png"), ("label_2", ".txt")):
        (kitti / part).mkdir(parents=True)
        (kitti / part / f"000004{suffix}").symlink_to(
            drives / "labeled" / "kitti_object_cropped" / part / f"000004{suffix}")
    assert train_cli("--data", str(distilled), "--kitti", str(kitti), "--out",
                     str(tmp_path / "run"), "--steps", "2", "--supervised-weight", "2", *TINY) == 0


def test_empty_or_mislabelled_folders_are_refused(tmp_path: Path, drives: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_cli("--data", str(empty), "--out", str(tmp_path / "r1"), *TINY) == 2
    assert "index.json" in capsys.readouterr().err
    assert train_cli("--kitti", str(empty), "--out", str(tmp_path / "r2"), *TINY) == 2
    assert "no such folder" in capsys.readouterr().err
    kitti = tmp_path / "kitti"
    (kitti / "label_2").mkdir(parents=True)
    (kitti / "image_2").mkdir()
    (kitti / "image_2" / "000000.png").symlink_to(drives / "kitti_object/image_2/000000.png")
    (kitti / "label_2" / "000000.txt").write_text("Car 0 0 -1.5 10 20 30\n")
    with pytest.raises(DataError, match=r"000000.txt:1: a KITTI label line has 15 fields"):
        read_kitti(kitti)
    (kitti / "label_2" / "000000.txt").unlink()
    with pytest.raises(DataError, match="missing"):
        read_kitti(kitti)
    assert train_cli("--bdd-drivable", str(drives / "labeled" / "bdd100k_drivable"), "--out",
                     str(tmp_path / "r3"), *TINY) == 2  # labels without their images
    assert "--bdd-images together with" in capsys.readouterr().err
    assert not any((tmp_path / run).exists() for run in ("r1", "r2", "r3"))


def test_foreign_checkpoints_are_refused_and_kept(distilled: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    foreign = run / "last.pt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, foreign)
    before = foreign.read_bytes()
    assert train_cli("--data", str(distilled), "--out", str(run), "--resume", *TINY) == 2
    assert "architecture" in capsys.readouterr().err
    assert train_cli("--data", str(distilled), "--out", str(run), *TINY) == 2  # no --resume
    assert "nothing was overwritten" in capsys.readouterr().err
    assert foreign.read_bytes() == before
    other = tmp_path / "other"
    assert train_cli("--data", str(distilled), "--out", str(other), "--steps", "1", *TINY) == 0
    with pytest.raises(CheckpointError, match="differs"):
        from models.net import NetConfig
        load_checkpoint(other / "last.pt", NetConfig(width=128, height=64))
    # fine-tuning at another input size takes the weights (a fully convolutional network) ...
    larger = ["--width", "128", "--height", "64", *TINY[4:]]
    assert train_cli("--data", str(distilled), "--out", str(tmp_path / "larger"), "--steps",
                     "1", "--init", str(other / "last.pt"), *larger) == 0
    # ... and grows by context blocks that start as the identity ...
    grown_run = tmp_path / "grown"
    assert train_cli("--data", str(distilled), "--out", str(grown_run), "--steps", "1",
                     "--init", str(other / "last.pt"), "--seg-context", "2", *TINY) == 0
    grown = load_checkpoint(grown_run / "last.pt")
    assert grown["config"]["seg_context"] == 2
    # ... but never shrinks by them (weights would be lost) ...
    assert train_cli("--data", str(distilled), "--out", str(tmp_path / "shrunk"), "--steps",
                     "1", "--init", str(grown_run / "last.pt"), *TINY) == 2
    assert "differs" in capsys.readouterr().err
    assert train_cli("--data", str(distilled), "--out", str(tmp_path / "negative"),
                     "--seg-context", "-1", *TINY) == 2
    assert "--seg-context must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "negative").exists()
    # ... nor goes into other layers
    state = torch.load(other / "last.pt", weights_only=True)
    state["config"]["neck"] = 64
    torch.save(state, tmp_path / "narrow.pt")
    assert train_cli("--data", str(distilled), "--out", str(tmp_path / "narrow"), "--steps",
                     "1", "--init", str(tmp_path / "narrow.pt"), *larger) == 2
    assert "differs" in capsys.readouterr().err


def test_arguments_parse() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", "x", "--data", "a", "--data", "b"])
    assert args.data == [Path("a"), Path("b")] and args.device == "auto"


def test_bad_label_folders_are_refused_before_training(tmp_path: Path, drives: Path) -> None:
    images = drives / "bdd100k_frames" / "yolop"
    with pytest.raises(DataError, match="no image matches the given BDD100K labels"):
        read_bdd(images, drivable=drives / "labeled" / "camvid_road" / "labels")  # wrong names
    detections = tmp_path / "det.json"
    detections.write_text('[{"name": "0ace96c3-48481887.jpg", "labels": [{"category": "car", '
                          '"box2d": {"x1": "left", "y1": 1, "x2": 3, "y2": 4}}]}]')
    with pytest.raises(DataError, match="'0ace96c3-48481887.jpg' is not in the BDD100K"):
        read_bdd(images, detections)
    camvid = tmp_path / "camvid"
    (camvid / "images").mkdir(parents=True)
    (camvid / "labels").mkdir()
    (camvid / "images" / "Seq05VD_f00000.png").symlink_to(
        drives / "labeled" / "camvid_road" / "images" / "Seq05VD_f00000.png")
    with pytest.raises(DataError, match=r"labels/Seq05VD_f00000.png: missing"):
        read_camvid_road(camvid)


@pytest.fixture(scope="module")
def sim_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-tick CARLA run in the in-process fake, stopped car ahead, with ground truth."""
    pytest.importorskip("carla", reason="the [sim] extra (carla wheel) is not installed")
    out = tmp_path_factory.mktemp("sim") / "run.mcap"
    assert cli_main(["sim", "--fake", "stopped-car", "--ticks", "20", "--ground-truth",
                     "--perception", "ground-truth", "--out", str(out)]) == 0
    return out


def test_sim_recording_is_labelled_training_data(sim_recording: Path, tmp_path: Path) -> None:
    records = read_sim_recording(sim_recording)
    assert len(records) == 20 and {r.source for r in records} == {"sim/run"}
    sample = load(records[0])
    assert sample.image.shape == (360, 640, 3) and sample.image.dtype == np.uint8
    assert sample.drivable.shape == sample.lanes.shape == (360, 640)
    assert 0.1 < sample.drivable.mean() < 0.9 and sample.lanes.any()
    assert not (sample.lanes & (1 - sample.drivable)).any()  # markings lie on the road
    (box,) = sample.boxes  # the stopped car, ahead of us, above the road's far end
    assert sample.classes.tolist() == [CLASS_ID["car"]]
    x1, y1, x2, y2 = box
    assert x1 < 320 < x2 and sample.drivable[int(y2):].any()
    assert train_cli("--sim", str(sim_recording), "--out", str(tmp_path / "run"),
                     "--steps", "1", *TINY) == 0


def test_not_a_sim_recording_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.mcap").write_bytes(b"not mcap")
    with pytest.raises(DataError, match="not a readable simulator recording"):
        read_sim_recording(tmp_path / "x.mcap")


def test_python_dash_m_models_train_exits_like_perception_train(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from models import train
    from models.command import standalone

    monkeypatch.setattr("sys.argv", ["models.train", "--kitti", str(tmp_path / "none"),
                                     "--out", str(tmp_path / "run")])
    assert standalone("train", train.add_arguments, train.main, train.__doc__) == 2
    assert capsys.readouterr().err.startswith("train: error: ")


def test_fused_pseudo_labels_and_ground_truth_first(distilled: Path) -> None:
    from models.distill import fuse_boxes, mirrored

    box = np.array([[100, 50, 200, 120]], np.float32)
    assert np.allclose(mirrored(mirrored(box, 640), 640), box)
    near = box + 2
    lone = np.array([[400, 10, 420, 40]], np.float32)  # one weak pass only: dropped
    passes = [(box, np.array([0.8]), np.array([2])), (near, np.array([0.6]), np.array([2])),
              (np.zeros((0, 4)), np.zeros(0), np.zeros(0)), (lone, np.array([0.4]), np.array([0]))]
    boxes, scores, classes = fuse_boxes(passes, 640, 360)
    assert len(boxes) == 1 and classes.tolist() == [2]
    assert np.allclose(boxes[0], box[0] + 2 * 0.6 / 1.4, atol=0.5)  # score-weighted average
    assert scores[0] == pytest.approx((0.8 + 0.6) / 4)
    index = json.loads((distilled / "index.json").read_text())
    bdd = next(f for f in index["frames"] if f["source"] == "bdd/0ace96c3-48481887")
    assert bdd["ground_truth"] == ["drivable"] and "picodet-s" in index["teachers"]


def _comma10k_copy(drives: Path, folder: Path) -> Path:
    name = "0002_e8e95b54ed6116a6_2018-09-05--22-04-33_2_608.png"
    for sub in ("imgs", "masks"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / name).write_bytes((drives / "labeled/comma10k" / sub / name).read_bytes())
    return folder / "masks" / name


def test_bad_training_labels_and_empty_splits_are_refused(distilled: Path, drives: Path,
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    import cv2

    mask_path = _comma10k_copy(drives, tmp_path / "sizes")
    mask = cv2.imread(str(mask_path))
    cv2.imwrite(str(mask_path), mask[:-2])
    assert train_cli("--labelled", str(tmp_path / "sizes"), "--out", str(tmp_path / "r1"),
                     *TINY) == 2
    assert "labels must match their image's size" in capsys.readouterr().err
    mask_path = _comma10k_copy(drives, tmp_path / "palette")
    mask[0, 0] = (7, 7, 7)
    cv2.imwrite(str(mask_path), mask)
    assert train_cli("--labelled", str(tmp_path / "palette"), "--out", str(tmp_path / "r2"),
                     *TINY) == 2
    assert "mask palette does not match comma10k's" in capsys.readouterr().err
    only_val = tmp_path / "only_val"
    only_val.mkdir()
    index = json.loads((distilled / "index.json").read_text())
    index["frames"] = [f for f in index["frames"] if f["split"] == "val"]
    (only_val / "index.json").write_text(json.dumps(index))
    assert train_cli("--data", str(only_val), "--out", str(tmp_path / "r3"), *TINY) == 2
    assert "no frame in split 'train'" in capsys.readouterr().err
    assert not any((tmp_path / run).exists() for run in ("r1", "r2", "r3"))


def test_agreement_with_the_teachers_scores_the_held_out_frames(distilled: Path) -> None:
    """The model card's agreement figures (`python -m models.evaluate`) on the shipped model:
    pooled and worst-frame drivable IoU, lane IoU, box AP and F1 at the shipped threshold."""
    from models.evaluate import Student, agreement
    from perception.zoo.registry import embedded

    frames = [f for f in json.loads((distilled / "index.json").read_text())["frames"]
              if f["split"] == "val"]
    student = Student(embedded()["multitask-lite"])
    figures = agreement([student], distilled, frames)[student.name]
    assert figures["frames"] == len(frames) >= 2
    assert 0.3 < figures["drivable_iou_min_frame"] <= figures["drivable_iou"] <= 1
    assert 0 <= figures["lane_iou"] <= 1 and 0 <= figures["box_map50"] <= 1
    assert 0 <= figures["box_f1"] <= 1 or np.isnan(figures["box_f1"])


def test_model_card_figures_keep_models_of_one_file_name_apart(distilled: Path,
                                                               tmp_path: Path) -> None:
    """Two versions of `multitask_lite.onnx` side by side get a row each (keyed by path), not
    one row that mixes them; the same file twice is refused."""
    import argparse
    import shutil

    from models import evaluate as card
    from perception.zoo.registry import embedded

    shipped = embedded()["multitask-lite"]
    other = tmp_path / "previous" / shipped.name
    other.parent.mkdir()
    shutil.copy(shipped, other)
    parser = argparse.ArgumentParser()
    card.add_arguments(parser)
    out = tmp_path / "figures.json"
    common = ["--distilled", str(distilled), "--latency-only", "--latency-frames", "2",
              "--latency-rounds", "1", "--threads", "1"]
    assert card.main(parser.parse_args(["--model", str(shipped), "--model", str(other), *common,
                                   "--json", str(out)])) == 0
    latency = json.loads(out.read_text())["latency_ms_per_frame"]
    assert {str(shipped), str(other), "teachers"} == latency.keys()
    with pytest.raises(DataError, match="same file is given twice"):
        card.main(parser.parse_args(["--model", str(shipped), "--model", str(shipped), *common]))
