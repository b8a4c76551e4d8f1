"""`perception evaluate`: model sets scored side by side against real ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.data import read_labelled
from models.metrics import BoxCounts
from perception.cli import main as cli_main

COMMA10K = ("0001_a23b0de0bc12dcba_2018-06-24--00-29-19_17_79.png",  # night
            "0002_e8e95b54ed6116a6_2018-09-05--22-04-33_2_608.png")  # day


@pytest.fixture(scope="module")
def comma10k(drives: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two comma10k frames (one at night) with their masks, linked from the shared assets."""
    source = drives / "labeled" / "comma10k"
    folder = tmp_path_factory.mktemp("comma10k")
    for sub in ("imgs", "masks"):
        (folder / sub).mkdir()
        for name in COMMA10K:
            (folder / sub / name).symlink_to(source / sub / name)
    return folder


@pytest.fixture(scope="module")
def kitti(drives: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kitti")
    for sub, suffix in (("image_2", ".png"), ("label_2", ".txt")):
        (folder / sub).mkdir()
        for stem in ("000012", "000015"):
            (folder / sub / f"{stem}{suffix}").symlink_to(
                drives / "labeled" / "kitti_object_cropped" / sub / f"{stem}{suffix}")
    return folder


def test_box_counts_precision_recall_f1() -> None:
    counts = BoxCounts()
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], np.float32)
    found = np.array([[0, 0, 10, 11], [20, 20, 30, 30], [20, 20, 30, 31], [80, 80, 90, 90]],
                     np.float32)  # two hits, a duplicate, a box on nothing
    counts.add(found, np.array([0.9, 0.8, 0.7, 0.6]), np.array([2, 2, 5, 0]),
               truth, np.array([2, 2, 0]))
    vehicle, person = counts.values()["vehicle"], counts.values()["person"]
    assert (vehicle["tp"], vehicle["fp"], vehicle["fn"]) == (2, 1, 0)
    assert vehicle["precision"] == pytest.approx(2 / 3) and vehicle["recall"] == 1.0
    assert (person["tp"], person["fp"], person["fn"]) == (0, 1, 1) and person["f1"] == 0.0
    assert counts.values()["all"]["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))


def test_labelled_folders_by_layout_with_conditions_and_hood(comma10k: Path, drives: Path
                                                             ) -> None:
    records = read_labelled(comma10k)
    assert [r.condition for r in records] == ["night", "day"]
    assert all(r.hood is not None and r.lanes is not None for r in records)
    bdd = read_labelled(drives / "labeled" / "bdd100k_val_drivable")
    assert sorted(r.condition for r in bdd) == ["day", "day", "night", "night"]
    camvid = read_labelled(drives / "labeled" / "camvid_seq05vd_more")
    assert len(camvid) == 141 and {r.source for r in camvid} == {"camvid/Seq05VD"}


def test_evaluate_sets_side_by_side(comma10k: Path, kitti: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "figures.json"
    assert cli_main(["evaluate", "--models", "multitask-lite", "--models",
                     "yolox-nano,twinlitenet", "--data", str(comma10k), str(kitti),
                     "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "| comma10k | night | drivable_iou |" in printed
    assert "| kitti | day | vehicle+person_f1 |" in printed
    assert set(table["comma10k"]) == {"night", "day", "all"}
    teachers = table["comma10k"]["all"]["yolox-nano,twinlitenet"]
    student = table["comma10k"]["all"]["multitask-lite"]
    assert teachers["frames"] == student["frames"] == 2 and teachers["hood_frames"] == 2
    assert 0.3 < teachers["drivable_iou"] <= 1 and 0 < teachers["lane_iou"] <= 1
    assert student["hood_drivable_pixels"] >= 0 and isinstance(student["hood_boxes"], int)
    kitti_teachers = table["kitti"]["day"]["yolox-nano,twinlitenet"]
    assert 0 < kitti_teachers["vehicle_recall"] <= 1 and "drivable_iou" not in kitti_teachers


def _copy_comma10k(comma10k: Path, folder: Path) -> Path:
    for sub in ("imgs", "masks"):
        (folder / sub).mkdir(parents=True)
        for path in (comma10k / sub).iterdir():
            (folder / sub / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.mark.parametrize("damage, message", [
    ("resize", "labels must match their image's size"),
    ("palette", "mask palette does not match comma10k's"),
])
def test_bad_labels_are_one_line_and_write_nothing(comma10k: Path, tmp_path: Path, damage: str,
                                                   message: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    folder = _copy_comma10k(comma10k, tmp_path / "bad")
    mask_path = sorted((folder / "masks").iterdir())[0]
    mask = cv2.imread(str(mask_path), cv2.IMREAD_COLOR)
    if damage == "resize":
        mask = cv2.resize(mask, (mask.shape[1] // 2, mask.shape[0] // 2),
                          interpolation=cv2.INTER_NEAREST)
    else:
        mask[5, 5] = (1, 2, 3)
    cv2.imwrite(str(mask_path), mask)
    out = tmp_path / "figures.json"
    assert cli_main(["evaluate", "--models", "multitask-lite", "--data", str(folder),
                     "--json", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0] and mask_path.name in errors[0]
    assert not out.exists()


def test_unknown_layout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "frames").mkdir()
    assert cli_main(["evaluate", "--models", "multitask-lite", "--data",
                     str(tmp_path / "frames")]) == 2
    assert "not a labelled folder of a known layout" in capsys.readouterr().err


def test_held_out_from_scores_only_sources_a_distilled_folder_does_not_train_on(
        comma10k: Path, kitti: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    distilled = tmp_path / "distilled"
    distilled.mkdir()
    trained = ["comma10k/a23b0de0bc12dcba", "kitti/000012"]  # the night frame, one KITTI frame
    frames = [{"source": source, "split": "train"} for source in trained]
    (distilled / "index.json").write_text(json.dumps(
        {"frames": [*frames, {"source": "kitti/000015", "split": "val"}]}))
    out = tmp_path / "figures.json"
    assert cli_main(["evaluate", "--models", "multitask-lite", "--data", str(comma10k),
                     str(kitti), "--held-out-from", str(distilled), "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    assert set(table["comma10k"]) == {"day", "all"}
    assert table["comma10k"]["all"]["multitask-lite"]["frames"] == 1
    assert table["kitti"]["all"]["multitask-lite"]["frames"] == 1
    assert "2 of 4 frames" in capsys.readouterr().err

    (distilled / "index.json").write_text(json.dumps({"frames": frames}))
    assert cli_main(["evaluate", "--models", "multitask-lite", "--data", str(kitti),
                     "--held-out-from", str(distilled)]) == 0  # 000015 is in neither split
    assert cli_main(["evaluate", "--models", "multitask-lite", "--data", str(comma10k),
                     "--held-out-from", str(comma10k)]) == 2
    assert "no index.json" in capsys.readouterr().err
    every = [{"source": "comma10k/e8e95b54ed6116a6", "split": "train"}, *frames]
    (distilled / "index.json").write_text(json.dumps({"frames": every}))
    assert cli_main(["evaluate", "--models", "multitask-lite", "--data", str(comma10k),
                     "--held-out-from", str(distilled)]) == 2
    assert "nothing is left to score" in capsys.readouterr().err
    (distilled / "index.json").write_text(json.dumps({"frames": [{"split": "train"}]}))
    assert cli_main(["evaluate", "--models", "multitask-lite", "--data", str(comma10k),
                     "--held-out-from", str(distilled)]) == 2  # an entry without its source
    assert "not a distilled-frames index" in capsys.readouterr().err
