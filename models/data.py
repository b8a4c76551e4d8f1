"""Labelled frames on disk: readers for the public formats, and loading one frame with its labels.

A `Record` says where a frame and its labels are; nothing is decoded until `load` is called, so
a reader over the full BDD100K (70k frames) costs only its label files. Any label may be absent
(`None`): a KITTI frame has boxes but no masks, a CamVid frame a road mask but no boxes; the
training loss skips what a frame does not have.

Formats:
- BDD100K: detection JSON (a list of {"name", "labels": [{"category", "box2d": {x1,y1,x2,y2}}]}),
  drivable maps `<id>_drivable_id.png` (0 background, 1 ego, 2 alternative), lane masks
  `<id>.png` (255 background, any other value a lane pixel).
- KITTI object `label_2/*.txt` (15 fields; type and 2-D box used), KITTI road `gt_image_2`
  (devkit rule: positive where blue > 0).
- CamVid SegNet labels (class 3 = road), TuSimple `label_data.json` lane polylines.
- comma10k `imgs/*.png` with `masks/*.png` in its colour palette (road, lane markings,
  undrivable, movable, my car); drivable = road + lane markings, the hood = my car.
- Our distilled folders (`models/distill.py`): `index.json` + per-frame `.npz` pseudo-labels.
- CARLA runs recorded with `perception sim --ground-truth --out run.mcap`
  (`sim_bridge/recording.py`): per tick, `/camera/image` with `/ground_truth/drivable` and
  `/ground_truth/lanes` (PNG masks, 255 = positive) and `/ground_truth/boxes` (JSON
  detections), all at the tick's log time.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from mcap.exceptions import McapError
from mcap.reader import make_reader

from models.classes import CLASSES
from perception.errors import PerceptionError
from perception.frames import IMAGE_SUFFIXES, read_image
from perception.logs.foxglove_writer import IMAGE_TOPIC
from perception.logs.messages import deserialize, image_of
from perception.results import Detection

CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
KITTI_CLASSES = {"Car": "car", "Van": "car", "Truck": "truck", "Pedestrian": "person",
                 "Person_sitting": "person", "Cyclist": "person"}  # Tram, Misc, DontCare: skip
BDD_CLASSES = {"pedestrian": "person", "person": "person", "rider": "person",
               "bicycle": "bicycle", "bike": "bicycle", "car": "car", "motorcycle": "motorcycle",
               "motor": "motorcycle", "bus": "bus", "truck": "truck",
               "traffic light": "traffic light"}
TUSIMPLE_LINE_WIDTH = 8 / 1280  # lane lines are drawn 8 px wide at 1280 px, scaled to the image
SIM_IMAGE, SIM_BOXES = IMAGE_TOPIC, "/ground_truth/boxes"  # sim_bridge/recording.py
SIM_MASKS = {"drivable": "/ground_truth/drivable", "lanes": "/ground_truth/lanes"}
COMMA10K_COLOURS = {"road": (64, 32, 32), "lanes": (255, 0, 0), "undrivable": (128, 128, 96),
                    "movable": (0, 255, 102), "hood": (204, 0, 255)}  # RGB, MANIFEST 6.3
COMMA10K_RULES = {"drivable": "comma10k:road+lanes", "lanes": "comma10k:lanes",
                  "hood": "comma10k:hood"}
CAMVID_CLASSES = 12  # SegNet CamVid: 0..10 classes, 11 unlabelled
# Conditions of frames whose lighting the shared assets state (MANIFEST 5.1, 6.2, 6.3); by
# source prefix (whole drives by day) or by file-name prefix (single frames).
DAY_SOURCES = ("camvid", "kitti", "kitti_road", "tusimple", "comma10k")
FRAME_CONDITIONS = {"0001_": "night", "0003_": "night", "0010_": "dusk",  # comma10k
                    "b23a79d1": "night", "b6ffe7bd": "night",  # BDD100K val
                    "b3d4554c": "day", "bab692c9": "day"}


class DataError(PerceptionError):
    """A training folder or label file that cannot be used; the message says which and why."""


@dataclass
class Mask:
    """Where a binary mask comes from: a file and the rule that turns its pixels into 0/1."""

    path: Path
    rule: str  # "nonzero", "class:N", "not:N", "blue", "npz:KEY"


@dataclass
class Record:
    """One frame on disk with whatever labels exist for it."""

    image: Path
    source: str  # the video, sequence or dataset it belongs to (splits never cut a source)
    boxes: np.ndarray | None = None  # (K, 4) x1 y1 x2 y2 in image pixels
    classes: np.ndarray | None = None  # (K,) indices into CLASSES
    drivable: Mask | None = None
    lanes: Mask | None = None
    lane_points: list[np.ndarray] | None = None  # TuSimple polylines (image pixels)
    log_time_ns: int | None = None  # a recorded sim tick: `image` is the MCAP file, the
    # tick's masks are read with its image (`load_tick`)
    hood: Mask | None = None  # our own car in the picture (comma10k's "my car")
    condition: str = "unknown"  # day, dusk, night, rain: where the data says so


def condition_of(image: Path, source: str) -> str:
    """The lighting of a frame where the shared assets state it, else "unknown"."""
    for prefix, condition in FRAME_CONDITIONS.items():
        if image.name.startswith(prefix):
            return condition
    if source.split("/")[0] in DAY_SOURCES:
        return "day"
    return "unknown"


@dataclass
class Sample:
    """A loaded frame: BGR uint8 image, boxes and 0/1 masks at image size (None = unlabelled)."""

    image: np.ndarray
    boxes: np.ndarray | None
    classes: np.ndarray | None
    drivable: np.ndarray | None
    lanes: np.ndarray | None
    hood: np.ndarray | None = None  # 0/1, where our own car is (evaluation only)


def load_arrays(path: Path, *keys: str) -> list[np.ndarray]:
    """Arrays of an .npz label file, by key. Plain numbers only: an object array would need
    pickle, which runs code from the file, so it is refused like any unreadable file."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            missing = [key for key in keys if key not in data.files]
            if missing:
                raise DataError(f"{path}: has no array {', '.join(missing)}")
            return [data[key] for key in keys]
    except ValueError as error:  # object arrays, pickled data, not NumPy at all
        raise DataError(f"{path}: not a label file of plain arrays ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot be read as an .npz file ({error})") from None


def comma10k_mask(pixels: np.ndarray, names: str, path: Path) -> np.ndarray:
    """Pixels of the comma10k classes `names` ("road+lanes"); a colour outside the palette
    means the file is not a comma10k mask (or a lossy copy of one)."""
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise DataError(f"{path}: a comma10k mask is a colour image, got shape {pixels.shape}")
    rgb = pixels[..., 2::-1] if pixels.shape[2] == 3 else pixels[..., 2::-1][..., :3]
    code = rgb.astype(np.int32) @ np.array([65536, 256, 1], np.int32)
    palette = {r * 65536 + g * 256 + b for r, g, b in COMMA10K_COLOURS.values()}
    stray = np.setdiff1d(np.unique(code), list(palette))
    if len(stray):
        value = int(stray[0])
        raise DataError(f"{path}: mask palette does not match comma10k's ({len(stray)} "
                        f"colours outside it, e.g. RGB {value >> 16},{value >> 8 & 255},"
                        f"{value & 255})")
    wanted = [r * 65536 + g * 256 + b for r, g, b in
              (COMMA10K_COLOURS[name] for name in names.split("+"))]
    return np.isin(code, wanted)


def read_mask(mask: Mask, size: tuple[int, int]) -> np.ndarray:
    """The 0/1 uint8 mask at `size` (width, height), by the mask's rule.

    A label image must have the size of its frame (a mismatch means the wrong file or a
    resized copy); the teachers' masks in a distilled `.npz` are resized to the frame."""
    if mask.rule.startswith("npz:"):
        (pixels,) = load_arrays(mask.path, mask.rule[4:])
    else:
        pixels = cv2.imread(str(mask.path), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise DataError(f"{mask.path}: label mask missing or not an image")
        if pixels.shape[1::-1] != size:
            raise DataError(f"{mask.path}: label is {pixels.shape[1]}x{pixels.shape[0]}, its "
                            f"image {size[0]}x{size[1]}; labels must match their image's size")
    if mask.rule == "blue":  # OpenCV reads BGR: blue is channel 0
        binary = pixels[..., 0] > 0
    elif mask.rule.startswith("comma10k:"):
        binary = comma10k_mask(pixels, mask.rule[9:], mask.path)
    elif mask.rule.startswith("camvid:"):
        if pixels.ndim != 2 or pixels.max(initial=0) >= CAMVID_CLASSES:
            raise DataError(f"{mask.path}: not a SegNet CamVid label (single channel, classes "
                            f"0-{CAMVID_CLASSES - 1})")
        binary = pixels == int(mask.rule[7:])
    elif mask.rule.startswith("class:"):
        binary = pixels == int(mask.rule[6:])
    elif mask.rule.startswith("not:"):
        binary = pixels != int(mask.rule[4:])
    else:
        binary = pixels > 0
    binary = binary.astype(np.uint8)
    if binary.ndim != 2:
        raise DataError(f"{mask.path}: expected a single-channel mask for rule {mask.rule!r}")
    if binary.shape[::-1] != size:
        binary = cv2.resize(binary, size, interpolation=cv2.INTER_NEAREST)
    return binary


def draw_lanes(points: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Lane polylines (image pixels) drawn as a 0/1 mask of `size` (width, height)."""
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    thickness = max(1, round(TUSIMPLE_LINE_WIDTH * width))
    for line in points:
        cv2.polylines(mask, [np.round(line).astype(np.int32)], False, 1, thickness)
    return mask


def load(record: Record) -> Sample:
    if record.log_time_ns is not None:
        return load_tick(record)
    image = read_image(record.image)
    size = (image.shape[1], image.shape[0])
    lanes = read_mask(record.lanes, size) if record.lanes else None
    if record.lane_points is not None:
        lanes = draw_lanes(record.lane_points, size)
    boxes = record.boxes
    if boxes is not None:
        boxes = np.clip(boxes, 0, [size[0], size[1], size[0], size[1]]).astype(np.float32)
    return Sample(image, boxes, record.classes,
                  read_mask(record.drivable, size) if record.drivable else None, lanes,
                  read_mask(record.hood, size) if record.hood else None)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _box_arrays(boxes: list[list[float]], classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64))


def detection_arrays(detections: Iterable[Detection]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (K, 4), our class ids (K,) and scores (K,) of the road users among `detections`
    (a teacher's output or a simulator's labels); other categories are left out."""
    rows = [(d.box, CLASS_ID[d.category.replace("_", " ")], d.score) for d in detections
            if d.category and d.category.replace("_", " ") in CLASS_ID]
    boxes, classes = _box_arrays([r[0] for r in rows], [r[1] for r in rows])
    return boxes, classes, np.asarray([r[2] for r in rows], np.float32)


def parse_kitti_label(path: Path) -> tuple[np.ndarray, np.ndarray]:
    boxes, classes = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (15, 16):  # 16 with a score (detection results)
            raise DataError(f"{path}:{number}: a KITTI label line has 15 fields, got "
                            f"{len(fields)}")
        try:
            box = [float(v) for v in fields[4:8]]
        except ValueError as error:
            raise DataError(f"{path}:{number}: box fields are not numbers ({error})") from error
        if fields[0] in KITTI_CLASSES:
            boxes.append(box)
            classes.append(CLASS_ID[KITTI_CLASSES[fields[0]]])
    return _box_arrays(boxes, classes)


def read_kitti(folder: Path, source: str = "kitti") -> list[Record]:
    """A KITTI object folder: `image_2/NNNNNN.png` with `label_2/NNNNNN.txt`."""
    records = []
    for image in _images(folder / "image_2"):
        label = folder / "label_2" / f"{image.stem}.txt"
        if not label.is_file():
            raise DataError(f"{label}: missing (every image of {folder / 'image_2'} needs one)")
        boxes, classes = parse_kitti_label(label)
        records.append(Record(image, f"{source}/{image.stem}", boxes, classes,
                              condition="day"))
    return records


def read_bdd(images: Path, detections: Path | None = None, drivable: Path | None = None,
             lanes: Path | None = None) -> list[Record]:
    """BDD100K: an image folder plus any of detection JSON, drivable maps, lane masks."""
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if detections is not None:
        try:
            entries = json.loads(detections.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{detections}: not a readable BDD100K detection JSON ({error})") \
                from error
        if not isinstance(entries, list):
            raise DataError(f"{detections}: expected a list of frames, "
                            f"got {type(entries).__name__}")
        for entry in entries:
            try:
                pairs = [([lab["box2d"][k] for k in ("x1", "y1", "x2", "y2")],
                          CLASS_ID[BDD_CLASSES[lab["category"]]])
                         for lab in entry.get("labels") or []
                         if "box2d" in lab and lab.get("category") in BDD_CLASSES]
                labels[entry["name"]] = _box_arrays([p[0] for p in pairs], [p[1] for p in pairs])
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                name = entry.get("name", "?") if isinstance(entry, dict) else "?"
                raise DataError(f"{detections}: frame {name!r} is not in the BDD100K detection "
                                f"format ({type(error).__name__}: {error})") from error
    records = []
    for image in _images(images):
        boxes, classes = labels.get(image.name, (None, None))
        if detections is not None and boxes is None:
            continue  # a frame without box labels in a box-labelled set is not a negative
        record = Record(image, f"bdd/{image.stem}", boxes, classes,
                        condition=condition_of(image, "bdd"))
        if drivable is not None:
            path = drivable / f"{image.stem}_drivable_id.png"
            record.drivable = Mask(path, "nonzero") if path.is_file() else None
        if lanes is not None:
            path = lanes / f"{image.stem}.png"
            record.lanes = Mask(path, "not:255") if path.is_file() else None
        if record.boxes is not None or record.drivable or record.lanes:
            records.append(record)
    if not records:
        raise DataError(f"{images}: no image matches the given BDD100K labels (names: "
                        "<id>.jpg, <id>_drivable_id.png, <id>.png)")
    return records


def read_tusimple(folder: Path, source: str = "tusimple") -> list[Record]:
    """A TuSimple folder with `label_data.json` (one JSON object per line)."""
    path = folder / "label_data.json"
    if not path.is_file():
        raise DataError(f"{path}: missing")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            rows = np.asarray(entry["h_samples"], np.float32)
            lanes = [np.stack((np.asarray(xs, np.float32), rows), 1) for xs in entry["lanes"]]
            raw_file = entry["raw_file"]
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"{path}:{number}: not a TuSimple label line ({error})") from error
        image = folder / raw_file
        lanes = [lane[lane[:, 0] >= 0] for lane in lanes]
        if not image.is_file():
            raise DataError(f"{image}: missing (named in {path}:{number})")
        clip = Path(raw_file).parent.parent.name or folder.name
        records.append(Record(image, f"{source}/{clip}", lane_points=[x for x in lanes if len(x)],
                              condition="day"))
    if not records:
        raise DataError(f"{path}: holds no labelled frame")
    return records


def _label(path: Path, rule: str, image: Path) -> Mask:
    """The mask of `image`, checked now: a missing label file stops a run before it starts."""
    if not path.is_file():
        raise DataError(f"{path}: missing (the label of {image})")
    return Mask(path, rule)


def read_camvid_road(folder: Path) -> list[Record]:
    """SegNet CamVid: `images/<name>.png|jpg` with `labels/<name>.png` (class 3 = road)."""
    return [Record(image, f"camvid/{image.stem.split('_')[0]}",
                   drivable=_label(folder / "labels" / f"{image.stem}.png", "camvid:3", image),
                   condition="day")
            for image in _images(folder / "images")]


def comma10k_route(image: Path) -> str:
    """The drive of a comma10k frame `<n>_<route>_<segment>_<frame>.png`: its route's id."""
    parts = image.stem.split("_")
    return parts[1] if len(parts) > 1 else image.stem


def read_comma10k(folder: Path) -> list[Record]:
    """comma10k: `imgs/<n>_<route>_<segment>_<frame>.png` with `masks/<same>.png` (MANIFEST
    6.3); one source per route (a drive)."""
    records = []
    for image in _images(folder / "imgs"):
        label = folder / "masks" / image.name
        records.append(Record(image, f"comma10k/{comma10k_route(image)}",
                              drivable=_label(label, COMMA10K_RULES["drivable"], image),
                              lanes=Mask(label, COMMA10K_RULES["lanes"]),
                              hood=Mask(label, COMMA10K_RULES["hood"]),
                              condition=condition_of(image, "comma10k")))
    return records


def read_kitti_road(folder: Path) -> list[Record]:
    """KITTI road: `image_2/um_N.png` with `gt_image_2/um_road_N.png` (positive: blue)."""
    records = []
    for image in _images(folder / "image_2"):
        category, _, number = image.stem.partition("_")
        label = folder / "gt_image_2" / f"{category}_road_{number}.png"
        records.append(Record(image, f"kitti_road/{image.stem}",
                              drivable=_label(label, "blue", image), condition="day"))
    return records


def distilled_index(folder: Path) -> list[dict]:
    """The frame entries of a distilled folder's `index.json` (image, labels, source, split,
    origin, frame)."""
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise DataError(f"{folder}: no index.json; is this a folder written by "
                        "`python -m models.distill`?")
    try:
        frames = json.loads(index_path.read_text())["frames"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{index_path}: not a distilled-frames index ({error})") from error
    if not isinstance(frames, list) or not all(
            isinstance(f, dict) and {"split", "source"} <= f.keys() for f in frames):
        raise DataError(f"{index_path}: not a distilled-frames index (frames are not entries)")
    return frames


def read_distilled(folder: Path, split: str | None = None) -> list[Record]:
    """A folder written by `models/distill.py`: frames with teacher pseudo-labels."""
    index_path = folder / "index.json"
    records = []
    for frame in distilled_index(folder):
        if split and frame["split"] != split:
            continue
        labels = folder / frame["labels"]
        if not labels.is_file():
            raise DataError(f"{labels}: missing (listed in {index_path})")
        boxes, classes = load_arrays(labels, "boxes", "classes")
        records.append(Record(folder / frame["image"], frame["source"], boxes,
                              classes.astype(np.int64),
                              Mask(labels, "npz:drivable"), Mask(labels, "npz:lanes")))
    if not records:
        raise DataError(f"{index_path}: no frame in split {split!r}")
    return records


def read_sim_recording(path: Path) -> list[Record]:
    """A CARLA run recorded with ground truth: one record per tick that has CARLA's boxes.

    Only where each tick's messages are is read here; `load` decodes one tick's image and
    masks. A tick whose segmentation frame did not arrive has boxes but no masks.
    """
    boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    images: set[int] = set()
    try:
        with path.open("rb") as file:
            for _, channel, message in make_reader(file).iter_messages(
                    topics=[SIM_IMAGE, SIM_BOXES]):
                if channel.topic == SIM_IMAGE:
                    images.add(message.log_time)
                    continue
                labels = json.loads(message.data)["boxes"]
                found, classes, _ = detection_arrays(Detection.model_validate(d) for d in labels)
                boxes[message.log_time] = (found, classes)
    except (OSError, McapError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a readable simulator recording ({type(error).__name__}: "
                        f"{error})") from error
    ticks = sorted(images & boxes.keys())
    if not ticks:
        raise DataError(f"{path}: no tick with ground truth; record with `perception sim "
                        "--ground-truth --out FILE.mcap`")
    return [Record(path, f"sim/{path.stem}", *boxes[tick], log_time_ns=tick) for tick in ticks]


def load_tick(record: Record) -> Sample:
    """One tick of a simulator recording: the camera image and CARLA's masks (255 = positive)."""
    assert record.log_time_ns is not None
    found: dict[str, np.ndarray] = {}
    with record.image.open("rb") as file:
        for schema, channel, message in make_reader(file).iter_messages(
                topics=[SIM_IMAGE, *SIM_MASKS.values()], starting_at=record.log_time_ns,
                ending_at=record.log_time_ns):
            kind = schema.name if schema else ""
            found[channel.topic] = image_of(kind, deserialize(kind, message.data)).image
    if SIM_IMAGE not in found:
        raise DataError(f"{record.image}: no {SIM_IMAGE} at log time {record.log_time_ns} ns")
    masks = {name: (found[topic][..., 0] > 0).astype(np.uint8) if topic in found else None
             for name, topic in SIM_MASKS.items()}
    return Sample(found[SIM_IMAGE], record.boxes, record.classes, masks["drivable"],
                  masks["lanes"])


def labeled_assets(drives: Path) -> dict[str, list[Record]]:
    """The ground-truth samples of the shared assets (MANIFEST sections 2.4 and 5.1-5.5)."""
    labeled = drives / "labeled"
    kitti = read_kitti(drives / "kitti_object") + read_kitti(labeled / "kitti_object_cropped")
    return {
        "kitti_boxes": kitti,
        "camvid_road": read_camvid_road(labeled / "camvid_road"),
        "bdd_drivable": read_bdd(drives / "bdd100k_frames" / "yolop",
                                 drivable=labeled / "bdd100k_drivable"),
        "kitti_road": read_kitti_road(labeled / "kitti_road"),
        "tusimple_lanes": read_tusimple(labeled / "tusimple" / "sample_512x288")
        + read_tusimple(labeled / "tusimple" / "lanenet_examples"),
    }


LABELLED_LAYOUTS = "comma10k (imgs/, masks/), BDD100K drivable (images/, labels/*_drivable_id.png)"\
    ", CamVid (images/, labels/), KITTI object (image_2/, label_2/), KITTI road (image_2/, " \
    "gt_image_2/), TuSimple (label_data.json)"


def read_labelled(folder: Path) -> list[Record]:
    """A folder of frames with ground truth, its format told by its layout."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    if (folder / "imgs").is_dir() and (folder / "masks").is_dir():
        return read_comma10k(folder)
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        if any((folder / "labels").glob("*_drivable_id.png")):
            return read_bdd(folder / "images", drivable=folder / "labels")
        return read_camvid_road(folder)
    if (folder / "image_2").is_dir() and (folder / "label_2").is_dir():
        return read_kitti(folder)
    if (folder / "image_2").is_dir() and (folder / "gt_image_2").is_dir():
        return read_kitti_road(folder)
    if (folder / "label_data.json").is_file():
        return read_tusimple(folder)
    raise DataError(f"{folder}: not a labelled folder of a known layout ({LABELLED_LAYOUTS})")
