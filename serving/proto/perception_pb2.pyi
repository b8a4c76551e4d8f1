from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PerceiveRequest(_message.Message):
    __slots__ = ("image", "outputs", "mask_encoding", "camera", "mask_size")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MASK_ENCODING_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    MASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    outputs: _containers.RepeatedScalarFieldContainer[str]
    mask_encoding: str
    camera: str
    mask_size: str
    def __init__(self, image: _Optional[bytes] = ..., outputs: _Optional[_Iterable[str]] = ..., mask_encoding: _Optional[str] = ..., camera: _Optional[str] = ..., mask_size: _Optional[str] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("class_id", "label", "score", "box", "category", "distance_m", "distance_source", "in_path")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_M_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    IN_PATH_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    box: _containers.RepeatedScalarFieldContainer[float]
    category: str
    distance_m: float
    distance_source: str
    in_path: bool
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., box: _Optional[_Iterable[float]] = ..., category: _Optional[str] = ..., distance_m: _Optional[float] = ..., distance_source: _Optional[str] = ..., in_path: _Optional[bool] = ...) -> None: ...

class EncodedMask(_message.Message):
    __slots__ = ("encoding", "width", "height", "data", "counts", "frame_width", "frame_height")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    FRAME_WIDTH_FIELD_NUMBER: _ClassVar[int]
    FRAME_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    encoding: str
    width: int
    height: int
    data: bytes
    counts: _containers.RepeatedScalarFieldContainer[int]
    frame_width: int
    frame_height: int
    def __init__(self, encoding: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ..., counts: _Optional[_Iterable[int]] = ..., frame_width: _Optional[int] = ..., frame_height: _Optional[int] = ...) -> None: ...

class Masks(_message.Message):
    __slots__ = ("drivable", "lanes")
    DRIVABLE_FIELD_NUMBER: _ClassVar[int]
    LANES_FIELD_NUMBER: _ClassVar[int]
    drivable: EncodedMask
    lanes: EncodedMask
    def __init__(self, drivable: _Optional[_Union[EncodedMask, _Mapping]] = ..., lanes: _Optional[_Union[EncodedMask, _Mapping]] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Pixel(_message.Message):
    __slots__ = ("u", "v")
    U_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    u: float
    v: float
    def __init__(self, u: _Optional[float] = ..., v: _Optional[float] = ...) -> None: ...

class LaneBoundary(_message.Message):
    __slots__ = ("position", "image_points", "ground_points")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_POINTS_FIELD_NUMBER: _ClassVar[int]
    GROUND_POINTS_FIELD_NUMBER: _ClassVar[int]
    position: str
    image_points: _containers.RepeatedCompositeFieldContainer[Pixel]
    ground_points: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, position: _Optional[str] = ..., image_points: _Optional[_Iterable[_Union[Pixel, _Mapping]]] = ..., ground_points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class EgoLane(_message.Message):
    __slots__ = ("width_m", "offset_m")
    WIDTH_M_FIELD_NUMBER: _ClassVar[int]
    OFFSET_M_FIELD_NUMBER: _ClassVar[int]
    width_m: float
    offset_m: float
    def __init__(self, width_m: _Optional[float] = ..., offset_m: _Optional[float] = ...) -> None: ...

class CameraCheck(_message.Message):
    __slots__ = ("status", "pitch_error_deg", "horizon_row", "expected_row")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PITCH_ERROR_DEG_FIELD_NUMBER: _ClassVar[int]
    HORIZON_ROW_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ROW_FIELD_NUMBER: _ClassVar[int]
    status: str
    pitch_error_deg: float
    horizon_row: float
    expected_row: float
    def __init__(self, status: _Optional[str] = ..., pitch_error_deg: _Optional[float] = ..., horizon_row: _Optional[float] = ..., expected_row: _Optional[float] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("steer", "throttle", "brake")
    STEER_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_FIELD_NUMBER: _ClassVar[int]
    BRAKE_FIELD_NUMBER: _ClassVar[int]
    steer: float
    throttle: float
    brake: float
    def __init__(self, steer: _Optional[float] = ..., throttle: _Optional[float] = ..., brake: _Optional[float] = ...) -> None: ...

class Obstacle(_message.Message):
    __slots__ = ("x", "y", "width", "label")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    label: str
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("status", "reasons", "waypoints", "target_speed_mps", "control", "obstacles", "image_path")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    WAYPOINTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_SPEED_MPS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    OBSTACLES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    status: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    waypoints: _containers.RepeatedCompositeFieldContainer[Point]
    target_speed_mps: float
    control: Control
    obstacles: _containers.RepeatedCompositeFieldContainer[Obstacle]
    image_path: _containers.RepeatedCompositeFieldContainer[Pixel]
    def __init__(self, status: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., waypoints: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., target_speed_mps: _Optional[float] = ..., control: _Optional[_Union[Control, _Mapping]] = ..., obstacles: _Optional[_Iterable[_Union[Obstacle, _Mapping]]] = ..., image_path: _Optional[_Iterable[_Union[Pixel, _Mapping]]] = ...) -> None: ...

class Bev(_message.Message):
    __slots__ = ("png", "metres_per_pixel", "x_range", "y_range")
    PNG_FIELD_NUMBER: _ClassVar[int]
    METRES_PER_PIXEL_FIELD_NUMBER: _ClassVar[int]
    X_RANGE_FIELD_NUMBER: _ClassVar[int]
    Y_RANGE_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    metres_per_pixel: float
    x_range: _containers.RepeatedScalarFieldContainer[float]
    y_range: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, png: _Optional[bytes] = ..., metres_per_pixel: _Optional[float] = ..., x_range: _Optional[_Iterable[float]] = ..., y_range: _Optional[_Iterable[float]] = ...) -> None: ...

class PerceiveResponse(_message.Message):
    __slots__ = ("frame_index", "source", "timestamp", "width", "height", "detections", "timings_ms", "models", "masks", "plan", "bev", "sequence", "dropped", "error", "lane_boundaries", "ego_lane", "camera_check")
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    BEV_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LANE_BOUNDARIES_FIELD_NUMBER: _ClassVar[int]
    EGO_LANE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_CHECK_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    source: str
    timestamp: float
    width: int
    height: int
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    timings_ms: _containers.ScalarMap[str, float]
    models: _containers.RepeatedScalarFieldContainer[str]
    masks: Masks
    plan: Plan
    bev: Bev
    sequence: int
    dropped: int
    error: str
    lane_boundaries: _containers.RepeatedCompositeFieldContainer[LaneBoundary]
    ego_lane: EgoLane
    camera_check: CameraCheck
    def __init__(self, frame_index: _Optional[int] = ..., source: _Optional[str] = ..., timestamp: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., models: _Optional[_Iterable[str]] = ..., masks: _Optional[_Union[Masks, _Mapping]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., bev: _Optional[_Union[Bev, _Mapping]] = ..., sequence: _Optional[int] = ..., dropped: _Optional[int] = ..., error: _Optional[str] = ..., lane_boundaries: _Optional[_Iterable[_Union[LaneBoundary, _Mapping]]] = ..., ego_lane: _Optional[_Union[EgoLane, _Mapping]] = ..., camera_check: _Optional[_Union[CameraCheck, _Mapping]] = ...) -> None: ...
