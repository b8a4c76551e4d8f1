"""OpenCV augmentations that keep boxes, drivable area and lane lines consistent with the image.

Every random choice comes from the `numpy.random.Generator` passed in, so a run is repeatable
from its seed. Geometry (crop-and-scale, horizontal flip) is applied to the image, the masks and
the boxes together; photometric changes touch the image alone: colour, contrast, and what
breaks a day-trained model, each with its own probability: night (lower exposure, gamma,
sensor noise, a colour temperature shift, headlight and street-light glare), rain (streaks, a
veil, blur) and motion blur. A synthetic hood (`hood`) covers the bottom of some frames, with
no drivable area and no lane line on it: most training drives show no hood, and a student
that never saw one paints it as road. Flipping mirrors lane lines with the road, so left/right
stay consistent without any lane bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.data import Sample

MIN_BOX_SIDE = 2.0  # px at output size; smaller boxes after cropping are dropped


@dataclass(frozen=True)
class Augment:
    min_crop: float = 0.6  # smallest crop side, as a fraction of the frame
    flip: float = 0.5  # probability
    hue: float = 8.0  # max shift in OpenCV hue units (0..180)
    saturation: float = 0.4  # max relative change
    brightness: float = 0.35
    contrast: float = 0.3
    blur: float = 0.2  # probability of a Gaussian blur
    night: float = 0.25  # probability of the low-light chain (`night`)
    rain: float = 0.1  # probability of rain streaks and a veil (`rain`)
    motion_blur: float = 0.1  # probability of a horizontal or vertical motion blur
    hood: float = 0.4  # probability of a synthetic hood over the bottom of the frame


def crop_and_resize(sample: Sample, crop: tuple[float, float, float, float],
                    size: tuple[int, int], flip: bool = False) -> Sample:
    """Cut `crop` (x, y, w, h in image px) out of a sample and scale it to `size` (w, h)."""
    x, y, w, h = crop
    out_w, out_h = size
    sx, sy = out_w / w, out_h / h
    # `edges` maps continuous coordinates (a pixel spans [i, i + 1)), as boxes use them;
    # OpenCV warps pixel centres (integers), hence the half-pixel shift in `matrix`.
    edges = np.array([[sx, 0, -x * sx], [0, sy, -y * sy]], np.float32)
    if flip:
        edges[0] = [-sx, 0, out_w + x * sx]
    matrix = edges.copy()
    matrix[:, 2] += 0.5 * (edges[:, 0] + edges[:, 1]) - 0.5

    def warp(pixels: np.ndarray | None, interpolation: int) -> np.ndarray | None:
        if pixels is None:
            return None
        return cv2.warpAffine(pixels, matrix, size, flags=interpolation,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    boxes, classes = sample.boxes, sample.classes
    if boxes is not None and len(boxes):
        xs = boxes[:, [0, 2]] * edges[0, 0] + edges[0, 2]
        ys = boxes[:, [1, 3]] * sy - y * sy
        boxes = np.stack((xs.min(1), ys[:, 0], xs.max(1), ys[:, 1]), 1)
        boxes = np.clip(boxes, 0, [out_w, out_h, out_w, out_h]).astype(np.float32)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & \
               ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
        boxes, classes = boxes[keep], classes[keep]
    return Sample(warp(sample.image, cv2.INTER_LINEAR), boxes, classes,
                  warp(sample.drivable, cv2.INTER_NEAREST), warp(sample.lanes, cv2.INTER_NEAREST))


def resize(sample: Sample, size: tuple[int, int]) -> Sample:
    """The whole frame stretched to `size`, as the runtime feeds the network."""
    height, width = sample.image.shape[:2]
    return crop_and_resize(sample, (0, 0, width, height), size)


def photometric(image: np.ndarray, rng: np.random.Generator, config: Augment) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-config.hue, config.hue)) % 180
    hsv[..., 1] *= 1 + rng.uniform(-config.saturation, config.saturation)
    image = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
    alpha = 1 + rng.uniform(-config.contrast, config.contrast)
    beta = 255 * rng.uniform(-config.brightness, config.brightness) * 0.5
    image = cv2.convertScaleAbs(image, alpha=alpha, beta=beta + 128 * (1 - alpha))
    if rng.random() < config.blur:
        kernel = int(rng.choice([3, 5]))
        image = cv2.GaussianBlur(image, (kernel, kernel), 0)
    return image


def night(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low light: exposure down, gamma up, a colour temperature shift (sodium lamps or cold
    LEDs), a few headlight/streetlight glares, then sensor noise (noise after the light)."""
    pixels = image.astype(np.float32) / 255
    pixels = (pixels * rng.uniform(0.25, 0.8)) ** rng.uniform(1.0, 2.2)
    warm = rng.uniform(-0.15, 0.25)  # > 0: orange (B down, R up), < 0: blue
    pixels *= np.array([1 - warm, 1.0, 1 + warm], np.float32)
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, width), rng.uniform(0.05 * height, 0.8 * height)
        radius = rng.uniform(0.01, 0.06) * width
        glow = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius ** 2))
        pixels += glow[..., None] * rng.uniform(0.5, 1.2)
    pixels += rng.normal(0, rng.uniform(0.005, 0.04), pixels.shape).astype(np.float32)
    return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def rain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slanted bright streaks (sparse noise smeared along a direction), a grey veil, blur."""
    height, width = image.shape[:2]
    drops = (rng.random((height, width)) < rng.uniform(0.002, 0.01)).astype(np.float32)
    length = int(rng.integers(7, 21))
    kernel = np.zeros((length, length), np.float32)
    slant = int(rng.integers(-length // 3, length // 3 + 1))
    cv2.line(kernel, (length // 2 - slant, 0), (length // 2 + slant, length - 1), 1.0, 1)
    streaks = cv2.filter2D(drops, -1, kernel / kernel.sum())
    veil = rng.uniform(0.05, 0.25)
    pixels = image.astype(np.float32) * (1 - veil) + 200 * veil
    pixels += streaks[..., None] * rng.uniform(60, 140) * length / 4
    return cv2.GaussianBlur(np.clip(pixels, 0, 255).astype(np.uint8), (3, 3), 0)


def motion_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    length = int(rng.integers(3, 10))
    kernel = np.zeros((length, length), np.float32)
    if rng.random() < 0.5:
        kernel[length // 2] = 1 / length
    else:
        kernel[:, length // 2] = 1 / length
    return cv2.filter2D(image, -1, kernel)


def weather(image: np.ndarray, rng: np.random.Generator, config: Augment) -> np.ndarray:
    """Night, rain and motion blur, each drawn with its probability."""
    if rng.random() < config.night:
        image = night(image, rng)
    if rng.random() < config.rain:
        image = rain(image, rng)
    if rng.random() < config.motion_blur:
        image = motion_blur(image, rng)
    return image


HOOD_COLOURS = np.array([[20, 20, 20], [60, 60, 60], [150, 150, 150], [225, 225, 225],
                         [40, 40, 160], [120, 60, 20], [30, 70, 40]], np.float32)  # BGR paints


def dashboard_band(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A dashboard seen from behind the windscreen, (height, width, 3) float BGR: near black
    plastic, rows of vents (darker and lighter lines), grain, and a faint blurred glare."""
    level = rng.uniform(8, 50)
    rows = np.full(height, level, np.float32)
    for _ in range(rng.integers(0, 5)):  # vents and trim lines
        row = rng.integers(0, height)
        rows[row:row + rng.integers(1, 4)] *= rng.uniform(0.4, 1.8)
    band = np.repeat(rows[:, None], width, axis=1)
    band += cv2.GaussianBlur(rng.normal(0, rng.uniform(5, 25), (height, width)).astype(np.float32),
                             (0, 0), rng.uniform(1, 8))  # glare through the windscreen
    band += rng.normal(0, 2.0, (height, width)).astype(np.float32)  # grain
    tint = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    return np.clip(band[..., None] * tint, 0, 255)


def hood(sample: Sample, rng: np.random.Generator) -> Sample:
    """Our own car's bonnet over the bottom 6-25 % of the frame: a convex top edge, paint of a
    random colour reflecting the scene above it (mirrored, blurred), a soft highlight; in half
    the draws the dashboard covers its lower part (comma10k's and BDD100K's cameras sit behind
    the windscreen). The drivable area and lane lines under it are cleared, and boxes mostly
    under it dropped."""
    image = sample.image
    height, width = image.shape[:2]
    rise = rng.uniform(0.06, 0.25) * height  # the hood's height at its highest point
    droop = rng.uniform(0.0, 0.6) * rise  # how much lower its top edge is at the frame sides
    centre = rng.uniform(0.3, 0.7) * width
    xs = np.arange(width, dtype=np.float32)
    top = height - rise + droop * ((xs - centre) / max(centre, width - centre)) ** 2
    under = np.arange(height, dtype=np.float32)[:, None] >= top[None, :]
    first = int(top.min())
    reflection = cv2.GaussianBlur(image[max(0, 2 * first - height):first][::-1], (0, 0), 3)
    body = np.zeros_like(image, dtype=np.float32)
    body[first:first + len(reflection)] = reflection
    paint = HOOD_COLOURS[rng.integers(len(HOOD_COLOURS))] * rng.uniform(0.6, 1.2)
    gloss = rng.uniform(0.1, 0.45)
    shade = np.linspace(1.0, rng.uniform(0.4, 0.9), height, dtype=np.float32)[:, None, None]
    hood_pixels = ((1 - gloss) * paint + gloss * body) * shade
    if rng.random() < 0.5:  # a camera behind the windscreen also sees the dashboard
        dash_top = height - rng.uniform(0.3, 0.9) * (rise - droop)  # inside the hood region
        dashboard = dashboard_band(width, height, rng)
        below = np.arange(height, dtype=np.float32)[:, None] >= dash_top + rng.uniform(
            -0.01, 0.01) * height * (xs - centre)[None, :] / width  # a slight tilt
        hood_pixels = np.where((below & under)[..., None], dashboard, hood_pixels)
    out = image.astype(np.float32)
    out[under] = hood_pixels[under]
    drivable = None if sample.drivable is None else np.where(under, 0, sample.drivable)
    lanes = None if sample.lanes is None else np.where(under, 0, sample.lanes)
    boxes, classes = sample.boxes, sample.classes
    if boxes is not None and len(boxes):
        covered = np.array([under[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))].mean()
                            if x2 - x1 >= 1 and y2 - y1 >= 1 else 0.0
                            for x1, y1, x2, y2 in boxes])
        boxes, classes = boxes[covered <= 0.5], classes[covered <= 0.5]
    return Sample(np.clip(out, 0, 255).astype(np.uint8), boxes, classes,
                  None if drivable is None else drivable.astype(sample.drivable.dtype),
                  None if lanes is None else lanes.astype(sample.lanes.dtype))


def augment(sample: Sample, size: tuple[int, int], rng: np.random.Generator,
            config: Augment = Augment()) -> Sample:
    """A random crop (keeping the frame's aspect within 20 %), flip and colour change."""
    height, width = sample.image.shape[:2]
    scale = rng.uniform(config.min_crop, 1.0)
    crop_w = width * min(1.0, scale * rng.uniform(0.9, 1.1))
    crop_h = height * min(1.0, scale * rng.uniform(0.9, 1.1))
    x = rng.uniform(0, width - crop_w)
    y = rng.uniform(0, height - crop_h)
    out = crop_and_resize(sample, (x, y, crop_w, crop_h), size, flip=rng.random() < config.flip)
    if rng.random() < config.hood:
        out = hood(out, rng)
    out.image = weather(photometric(out.image, rng, config), rng, config)
    return out
