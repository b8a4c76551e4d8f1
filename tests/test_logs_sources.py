"""Drive log readers on real data: the Udacity video recorded to MCAP, rosbag2 files written
here with rosbags (sqlite3 and mcap storage), KITTI folders with their calibration, and
truncated or damaged logs."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from perception.cli import main as cli
from perception.frames import CorruptRecordError, SourceError
from perception.logs.sources import count_log_frames, open_log

VIDEO_FRAMES = 221  # solidWhiteRight.mp4: 25 fps, 8.84 s
T0 = 1_700_000_000_000_000_000  # ns, the bags' first stamp


@pytest.fixture(scope="module")
def drive_mcap(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real video recorded with `perception record`."""
    out = tmp_path_factory.mktemp("mcap") / "drive.mcap"
    assert cli(["record", "--video", str(video_path), "--out", str(out)]) == 0
    return out


def video_images(video_path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video_path))
    images = [capture.read()[1] for _ in range(count)]
    capture.release()
    return images


def write_bag(path: Path, storage: StoragePlugin, images: list[np.ndarray]) -> None:
    """A rosbag2 with the same frames as CompressedImage (JPEG) and raw rgb8 Image topics, and
    a CameraInfo, 40 ms apart."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    Header, Time = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
    Compressed, Image = types["sensor_msgs/msg/CompressedImage"], types["sensor_msgs/msg/Image"]
    Info, Roi = types["sensor_msgs/msg/CameraInfo"], types["sensor_msgs/msg/RegionOfInterest"]
    with Writer(path, version=8, storage_plugin=storage) as writer:
        compressed = writer.add_connection("/cam/image/compressed", Compressed.__msgtype__,
                                           typestore=store)
        raw = writer.add_connection("/cam/image_raw", Image.__msgtype__, typestore=store)
        info = writer.add_connection("/cam/camera_info", Info.__msgtype__, typestore=store)
        for i, image in enumerate(images):
            t = T0 + i * 40_000_000
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam")
            h, w = image.shape[:2]
            camera = Info(header=header, height=h, width=w, distortion_model="plumb_bob",
                          d=np.zeros(5), k=np.array([900.0, 0, w / 2, 0, 900, h / 2, 0, 0, 1]),
                          r=np.eye(3).ravel(),
                          p=np.array([900.0, 0, w / 2, 0, 0, 900, h / 2, 0, 0, 0, 1, 0]),
                          binning_x=0, binning_y=0,
                          roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            writer.write(info, t, store.serialize_cdr(camera, Info.__msgtype__))
            jpeg = cv2.imencode(".jpg", image)[1].ravel()
            writer.write(compressed, t, store.serialize_cdr(
                Compressed(header=header, format="jpeg", data=jpeg), Compressed.__msgtype__))
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            writer.write(raw, t, store.serialize_cdr(
                Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                      step=w * 3, data=rgb.ravel()), Image.__msgtype__))


@pytest.fixture(scope="module")
def bags(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    images = video_images(video_path, 5)
    folder = tmp_path_factory.mktemp("bags")
    paths = {}
    for storage in (StoragePlugin.SQLITE3, StoragePlugin.MCAP):
        paths[storage.name.lower()] = folder / storage.name.lower()
        write_bag(paths[storage.name.lower()], storage, images)
    return paths


def test_recorded_video_replays_with_its_timestamps_and_calibration(drive_mcap, video_path):
    frames = list(open_log(drive_mcap))
    assert len(frames) == VIDEO_FRAMES
    assert [f.index for f in frames] == list(range(VIDEO_FRAMES))
    assert np.allclose([f.timestamp for f in frames[:3]], [0.0, 0.04, 0.08])
    first = frames[0]
    assert first.image.shape == (540, 960, 3)
    assert first.meta["topic"] == "/camera/image"
    assert first.meta["compressed"][0] == "jpeg"
    assert first.meta["camera_info"].width == 960
    original = video_images(video_path, 1)[0]
    assert np.abs(first.image.astype(int) - original).mean() < 3  # JPEG, close to the video


def test_time_range_is_seconds_from_the_log_start(drive_mcap):
    frames = list(open_log(drive_mcap, start=1.0, end=2.0))
    assert len(frames) == 25
    assert frames[0].timestamp == pytest.approx(1.0)
    assert frames[-1].timestamp == pytest.approx(1.96)


def test_unknown_topic_lists_the_image_topics(drive_mcap):
    with pytest.raises(SourceError, match=r"no topic /front.*image topics: /camera/image"):
        open_log(drive_mcap, topic="/front")
    with pytest.raises(SourceError, match="not an image topic"):
        open_log(drive_mcap, topic="/camera/calibration")


def test_a_video_has_no_topics(video_path):
    with pytest.raises(SourceError, match="has no topics"):
        open_log(video_path, topic="/front")


def test_truncated_mcap_yields_the_frames_before_the_cut(drive_mcap, tmp_path):
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(drive_mcap.read_bytes()[: drive_mcap.stat().st_size // 2])
    frames = []
    with pytest.raises(CorruptRecordError, match=r"byte offset \d+ .*truncated") as error:
        frames.extend(open_log(cut))
    assert 50 < len(frames) < VIDEO_FRAMES
    assert "/camera/image" in str(error.value) and "log time" in str(error.value)
    assert [f.index for f in frames] == list(range(len(frames)))


def test_not_an_mcap_and_an_empty_one_are_unusable(tmp_path, drive_mcap):
    text = tmp_path / "notes.mcap"
    text.write_text("hello")
    with pytest.raises(SourceError, match="not an MCAP file"):
        open_log(text)
    stub = tmp_path / "stub.mcap"
    stub.write_bytes(drive_mcap.read_bytes()[:40])
    with pytest.raises(SourceError, match="empty or truncated"):
        open_log(stub)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("topic", ["/cam/image/compressed", "/cam/image_raw"])
def test_rosbag2_images_with_camera_info(bags, video_path, storage, topic):
    frames = list(open_log(bags[storage], topic=topic))
    assert len(frames) == 5
    assert frames[1].timestamp == pytest.approx((T0 + 40_000_000) / 1e9)
    assert frames[0].meta["camera_info"].K[0] == 900.0
    assert frames[0].meta["frame_id"] == "cam"
    original = video_images(video_path, 1)[0]
    difference = np.abs(frames[0].image.astype(int) - original).mean()
    assert difference == 0 if topic.endswith("raw") else difference < 3


def test_rosbag2_with_several_image_topics_asks_for_one(bags):
    with pytest.raises(SourceError, match="several image topics.*/cam/image/compressed.*"
                                          "/cam/image_raw"):
        open_log(bags["sqlite3"])


def test_bare_mcap_with_ros2_messages(bags):
    recording = next(bags["mcap"].glob("*.mcap"))
    frames = list(open_log(recording, topic="/cam/image_raw", start=0.04))
    assert len(frames) == 4 and frames[0].meta["camera_info"].width == 960


def test_truncated_rosbag2_mcap_is_streamed_up_to_the_cut(bags, tmp_path):
    bag = tmp_path / "bag"
    shutil.copytree(bags["mcap"], bag)
    recording = next(bag.glob("*.mcap"))
    data = recording.read_bytes()
    recording.write_bytes(data[: len(data) * 3 // 4])
    frames = []
    with pytest.raises(CorruptRecordError, match="truncated"):
        frames.extend(open_log(bag, topic="/cam/image/compressed"))
    assert 1 <= len(frames) < 5


def test_undecodable_image_in_a_bag_stops_there_and_says_where(bags, tmp_path):
    """Overwrite the JPEG payload of the third compressed message inside the sqlite file."""
    bag = tmp_path / "bag"
    shutil.copytree(bags["sqlite3"], bag)
    import sqlite3
    database = sqlite3.connect(next(bag.glob("*.db3")))
    topic_id = database.execute("select id from topics where name = ?",
                                ("/cam/image/compressed",)).fetchone()[0]
    rows = database.execute("select id, data from messages where topic_id = ? order by timestamp",
                            (topic_id,)).fetchall()
    row_id, data = rows[2]
    damaged = data[:60] + bytes(len(data) - 60)  # header and format kept, JPEG zeroed
    database.execute("update messages set data = ? where id = ?", (damaged, row_id))
    database.commit()
    database.close()
    frames = []
    with pytest.raises(CorruptRecordError, match=r"/cam/image/compressed message 2 at log time "
                                                 r"1700000000\.080000 s"):
        frames.extend(open_log(bag, topic="/cam/image/compressed"))
    assert len(frames) == 2


def test_kitti_object_folder_with_calibration(drives):
    frames = list(open_log(drives / "kitti_object"))
    assert [f.name for f in frames] == ["000000", "000001", "000002"]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    info = frames[1].meta["camera_info"]
    assert (info.width, info.height) == (1242, 375)
    assert info.K[0] == pytest.approx(721.5377) and info.K[2] == pytest.approx(609.5593)


def test_kitti_raw_drive_with_timestamps_and_rectified_calibration(drives, tmp_path):
    """A raw-layout drive built from the real KITTI images and calibration values."""
    date = tmp_path / "2011_09_26"
    drive = date / "2011_09_26_drive_0001_sync"
    (drive / "image_02" / "data").mkdir(parents=True)
    for i, stem in enumerate(["000001", "000002"]):
        shutil.copy(drives / "kitti_object" / "image_2" / f"{stem}.png",
                    drive / "image_02" / "data" / f"{i:010d}.png")
    (drive / "image_02" / "timestamps.txt").write_text(
        "2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.067700000\n")
    P2 = (drives / "kitti_object" / "calib" / "000001.txt").read_text().splitlines()[2]
    (date / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\nS_rect_02: 1.242000e+03 3.750000e+02\n"
        f"P_rect_02:{P2.partition(':')[2]}\n")
    frames = list(open_log(drive))
    assert len(frames) == 2
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(0.1033, abs=1e-4)
    assert frames[0].timestamp == pytest.approx(1317042145.964389)
    assert frames[0].meta["topic"] == "image_02"
    assert frames[0].meta["camera_info"].P[3] == pytest.approx(44.85728)
    with pytest.raises(SourceError, match="image_03"):
        open_log(drive, topic="image_03")


def test_video_with_no_frames_is_unusable(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError):
        list(open_log(empty))


def test_foxglove_raw_image_mcap_is_read_exactly(video_path, tmp_path):
    """foxglove.RawImage (bgr8 and mono8) written with mcap-protobuf-support's writer."""
    from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
    from mcap_protobuf.writer import Writer as ProtobufWriter

    images = video_images(video_path, 3)
    path = tmp_path / "raw.mcap"
    with open(path, "wb") as file:
        writer = ProtobufWriter(file)
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            writer.write_message("/raw/bgr", RawImage(width=w, height=h, encoding="bgr8",
                                                      step=w * 3, data=image.tobytes()),
                                 log_time=T0 + i * 50_000_000, publish_time=T0)
            writer.write_message("/raw/mono", RawImage(width=w, height=h, encoding="mono8",
                                                       step=w, data=gray.tobytes()),
                                 log_time=T0 + i * 50_000_000, publish_time=T0)
        writer.finish()
    frames = list(open_log(path, topic="/raw/bgr"))
    assert len(frames) == 3 and frames[2].timestamp == pytest.approx((T0 + 100_000_000) / 1e9)
    assert all(np.array_equal(f.image, image) for f, image in zip(frames, images, strict=True))
    mono = next(iter(open_log(path, topic="/raw/mono")))
    assert np.array_equal(mono.image[..., 0], cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY))


def test_recorded_kitti_keeps_its_calibration(drives, tmp_path):
    out = tmp_path / "kitti.mcap"
    assert cli(["record", "--kitti", str(drives / "kitti_object"), "--out", str(out)]) == 0
    frames = list(open_log(out))
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    assert frames[1].meta["camera_info"].K[0] == pytest.approx(721.5377)
    assert frames[1].meta["camera_info"].P[3] == pytest.approx(44.85728)


def test_frame_totals_for_the_progress_bar(drive_mcap, bags, drives, video_path, tmp_path):
    assert count_log_frames(drive_mcap) == VIDEO_FRAMES
    assert count_log_frames(bags["sqlite3"]) is None  # two image topics, none chosen
    assert count_log_frames(bags["mcap"], "/cam/image_raw") == 5
    assert count_log_frames(drives / "kitti_object") == 3
    assert count_log_frames(video_path) == VIDEO_FRAMES
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(drive_mcap.read_bytes()[:100_000])
    assert count_log_frames(cut) is None  # no summary: unknown, not a guess


def test_record_with_a_camera_file_writes_its_intrinsics(video_path, tmp_path):
    out = tmp_path / "calibrated.mcap"
    camera = Path(__file__).resolve().parents[1] / "perception" / "cameras" / "udacity_960x540.yaml"
    assert cli(["record", "--video", str(video_path), "--out", str(out), "--duration", "0.2",
                "--calibration", str(camera)]) == 0
    frames = list(open_log(out))
    assert len(frames) == 5
    assert frames[0].meta["camera_info"].K[0] == pytest.approx(867.375)


def test_ros1_bag_images(video_path, tmp_path):
    """A ROS 1 bag written with rosbags: read by the same reader as rosbag2."""
    from rosbags.rosbag1 import Writer as Ros1Writer

    store = get_typestore(Stores.ROS1_NOETIC)
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    Compressed = store.types["sensor_msgs/msg/CompressedImage"]
    images = video_images(video_path, 3)
    bag = tmp_path / "drive.bag"
    with Ros1Writer(bag) as writer:
        connection = writer.add_connection("/cam/image/compressed", Compressed.__msgtype__,
                                           typestore=store)
        for i, image in enumerate(images):
            t = T0 + i * 40_000_000
            header = Header(seq=i, stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam")
            jpeg = cv2.imencode(".jpg", image)[1].ravel()
            writer.write(connection, t, store.serialize_ros1(
                Compressed(header=header, format="jpeg", data=jpeg), Compressed.__msgtype__))
    frames = list(open_log(bag))
    assert [f.timestamp for f in frames] == pytest.approx([(T0 + i * 40_000_000) / 1e9
                                                           for i in range(3)])
    assert frames[0].meta["frame_id"] == "cam" and frames[0].meta["compressed"][0] == "jpeg"
    assert count_log_frames(bag) == 3


def test_corrupt_chunk_names_its_byte_offset(drive_mcap, tmp_path):
    """Bytes flipped inside a chunk: its CRC fails; the error gives the chunk's start."""
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader

    with open(drive_mcap, "rb") as file:
        reader, starts, offset = StreamReader(file, emit_chunks=True), [], 8
        for record in reader.records:
            if isinstance(record, Chunk):
                starts.append(offset)
            offset = file.tell()
    data = bytearray(drive_mcap.read_bytes())
    data[starts[2] + 1000:starts[2] + 1100] = bytes(100)
    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(bytes(data))
    frames = []
    with pytest.raises(CorruptRecordError, match=rf"at byte offset {starts[2]} .*CRC"):
        frames.extend(open_log(damaged))
    assert 0 < len(frames) < VIDEO_FRAMES


def test_kitti_folder_broken_part_way(drives, tmp_path):
    """A calibration without P2 and an image that does not decode: the frames before stand,
    and `record` keeps them with exit code 3."""
    kitti = tmp_path / "kitti"
    shutil.copytree(drives / "kitti_object", kitti)
    (kitti / "calib" / "000001.txt").write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    frames = []
    with pytest.raises(CorruptRecordError, match=r"image_2 frame 1: .*000001\.txt: needs a P2"):
        frames.extend(open_log(kitti))
    assert len(frames) == 1
    shutil.copy(drives / "kitti_object" / "calib" / "000001.txt", kitti / "calib")
    (kitti / "image_2" / "000002.png").write_bytes(b"not a png")
    out = tmp_path / "kitti.mcap"
    assert cli(["record", "--kitti", str(kitti), "--out", str(out)]) == 3
    assert len(list(open_log(out))) == 2


def test_json_encoded_foxglove_images_are_refused_plainly(tmp_path):
    from mcap.writer import Writer as McapWriter

    path = tmp_path / "json.mcap"
    with open(path, "wb") as file:
        writer = McapWriter(file)
        writer.start()
        schema = writer.register_schema("foxglove.CompressedImage", "jsonschema", b"{}")
        channel = writer.register_channel("/cam", "json", schema)
        writer.add_message(channel, log_time=0, publish_time=0,
                           data=b'{"format": "jpeg", "data": ""}')
        writer.finish()
    with pytest.raises(SourceError, match="json-encoded foxglove.CompressedImage messages; only "
                                          "protobuf"):
        list(open_log(path))


def test_raw_image_above_the_pixel_limit_is_skipped_with_a_warning(tmp_path, capsys):
    """A foxglove.RawImage whose width and height claim 8K+ is skipped before its bytes are
    looked at; the warning names the topic, the message, its log time and byte offset."""
    from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
    from mcap_protobuf.writer import Writer as ProtobufWriter

    image = np.zeros((48, 64, 3), np.uint8)
    path = tmp_path / "raw.mcap"
    with open(path, "wb") as file:
        writer = ProtobufWriter(file)
        for i, (width, height) in enumerate([(64, 48), (100_000, 100_000), (64, 48)]):
            writer.write_message("/raw", RawImage(width=width, height=height, encoding="bgr8",
                                                  step=width * 3, data=image.tobytes()),
                                 log_time=T0 + i * 50_000_000, publish_time=T0)
        writer.finish()
    frames = list(open_log(path))
    assert [f.index for f in frames] == [0, 2]
    warning = capsys.readouterr().err
    assert "skipped" in warning and "/raw message 1 at log time 1700000000.050000 s" in warning
    assert "bgr8 image is 100000x100000 pixels; the limit is 33177600" in warning
    assert len(list(open_log(path, max_pixels=64 * 48))) == 2
