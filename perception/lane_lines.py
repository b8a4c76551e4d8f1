"""Lane lines as lanes: the lane-line mask fitted as boundary polylines, near to far.

A lane line runs away from the camera, so each image row crosses it once: a line is a function
u(v) of the row. The steps, at the mask's resolution (all sizes are fractions of it, so a
320x180 and a 640x360 mask behave alike):

1. Pieces. A small closing joins a line broken by a pixel. The foreground's runs (row
   segments) that touch (8-connectivity) in adjacent rows chain into pieces; where two lines
   touch (they meet near the horizon, or a line splits at an exit), a run touches two runs of
   the next row and is cut, so that each piece crosses a row once. Pieces with few pixels or
   rows are noise; flat ones (more than `MAX_SLOPE` columns per row) are stop lines,
   crosswalks or arrows, not lane lines. Each piece becomes its row centres.
2. Lines. Pieces join into lines, the longest first: a piece joins the line whose nearest end,
   extended straight, passes closest through it, within a tolerance that grows toward the
   camera (perspective) and with the gap; the dashes of a dashed line become one boundary. A
   line needs enough rows and pixels in all.
3. Fit. u(v) by least squares, 2nd order where the line spans enough rows (straight where it
   does not), with one round of outlier rejection; sampled every `ROW_STEP` of the height,
   near (bottom) to far, only over the rows the line was seen on, in frame pixels.
4. Labels. Each line's near part is extended straight to the bottom row; the nearest lines
   left and right of the image's centre column there are `ego_left` and `ego_right`.
"""

from __future__ import annotations

import cv2
import numpy as np

from perception.results import LaneBoundary

MIN_PIECE_PIXELS = 1e-4  # of the mask's pixels (15 px at 512x288, never under 8): fewer is noise
MIN_PIECE_ROWS = 3
MIN_LINE_PIXELS = 4e-4  # of the mask's pixels, all pieces of a line together (59 px)
MIN_LINE_ROWS = 0.05  # of the height, rows a line covers (14 rows at 288)
MAX_SLOPE = 8.0  # columns per row; flatter than ~7 degrees from horizontal is not a lane line
EGO_REACH = 0.75  # of the width: an ego line meets the bottom row at most this far from centre
END_ROWS = 0.15  # of the height: the part of a line at each end that is extended straight
# How far a piece may lie from a line's extension to join it: LINK_TOLERANCE of the width,
# + LINK_PERSPECTIVE columns per row below the highest piece (about the horizon: a fixed
# distance on the road spans more columns nearer the camera; 0.08 is 0.12 m for a camera 1.5 m
# high), + LINK_SPREAD columns per row of gap (an extension grows less sure with distance).
LINK_TOLERANCE = 0.008
LINK_PERSPECTIVE = 0.08
LINK_SPREAD = 0.08
MAX_LINK_GAP = 0.35  # of the height: the longest gap between the dashes of one line
QUADRATIC_ROWS = 0.2  # of the height: lines spanning more rows are fitted 2nd order
OUTLIER_FLOOR = 0.006  # of the width: residuals below this are never outliers (3 px at 512)
ROW_STEP = 1 / 36  # of the height: rows between the sampled points (20 px at 720)

Straight = tuple[float, float]  # u = slope * v + intercept


class _Line:
    """A piece of a lane line, or pieces joined into one: its row centres, far to near, and
    straight fits of its two ends (for extending them)."""

    def __init__(self, rows: np.ndarray, centres: np.ndarray, pixels: int, end_rows: float,
                 whole: Straight) -> None:
        self.rows = rows  # mask rows, ascending
        self.centres = centres  # mean column of the line's pixels in each row
        self.pixels = pixels
        self.end_rows = end_rows  # rows of each end that far_end and near_end are fitted on
        self.top, self.bottom = int(rows[0]), int(rows[-1])
        self.far_end = self.near_end = whole
        if self.bottom - self.top > end_rows:  # long enough to bend: fit its ends apart
            self._fit_ends()

    def join(self, other: _Line) -> None:
        rows = np.concatenate([self.rows, other.rows])
        order = np.argsort(rows, kind="stable")
        self.rows = rows[order]
        self.centres = np.concatenate([self.centres, other.centres])[order]
        self.pixels += other.pixels
        self.top, self.bottom = int(self.rows[0]), int(self.rows[-1])
        self._fit_ends()

    def _fit_ends(self) -> None:
        self.far_end = _straight(self.rows, self.centres, self.rows <= self.top + self.end_rows)
        self.near_end = _straight(self.rows, self.centres,
                                  self.rows >= self.bottom - self.end_rows)


def fit_lane_boundaries(lanes_mask: np.ndarray, frame_width: int, frame_height: int
                        ) -> list[LaneBoundary]:
    """Lane boundaries from a uint8 0/1 lane mask at any resolution, in frame pixels.

    Sorted left to right by where they meet the bottom row; at most one `ego_left` and one
    `ego_right`.
    """
    h, w = lanes_mask.shape[:2]
    lines = [line for line in _link(_pieces(lanes_mask), w, h)
             if line.pixels >= MIN_LINE_PIXELS * w * h
             and np.count_nonzero(np.diff(line.rows)) + 1 >= MIN_LINE_ROWS * h]
    bottoms = [line.near_end[0] * (h - 1) + line.near_end[1] for line in lines]
    order = np.argsort(bottoms)
    lines, bottoms = [lines[i] for i in order], [bottoms[i] for i in order]
    centre = (w - 1) / 2.0
    # An ego line leans toward the centre going up (a little the other way on a curve), and
    # meets the bottom row not far outside the image (the next lane's lines meet it farther).
    left = [i for i, line in enumerate(lines) if centre - EGO_REACH * w < bottoms[i] < centre
            and line.near_end[0] < 0.1]
    right = [i for i, line in enumerate(lines) if centre < bottoms[i] < centre + EGO_REACH * w
             and line.near_end[0] > -0.1]
    positions = {**({left[-1]: "ego_left"} if left else {}),
                 **({right[0]: "ego_right"} if right else {})}
    sx, sy = frame_width / w, frame_height / h
    step = max(1, round(ROW_STEP * h))
    boundaries = []
    for i, line in enumerate(lines):
        rows = np.arange(line.bottom, line.top - 1, -step, dtype=np.float64)
        if rows[-1] != line.top:
            rows = np.append(rows, line.top)
        points = np.column_stack([(_fit(line, w, h, rows) + 0.5) * sx - 0.5,
                                  (rows + 0.5) * sy - 0.5]).round(2)
        boundaries.append(LaneBoundary(position=positions.get(i, "other"),
                                       image_points=points.tolist()))
    return boundaries


def _pieces(mask: np.ndarray) -> list[_Line]:
    """The mask's pieces (see the module's step 1), each as row centres.

    Works on the runs (row segments) of the foreground only, a few percent of the mask: runs
    in adjacent rows touch when they share or neighbour a column (8-connectivity).
    """
    h, w = mask.shape[:2]
    size = max(3, 2 * round(w / 512) + 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    closed = cv2.morphologyEx(np.ascontiguousarray(mask, np.uint8), cv2.MORPH_CLOSE, kernel)
    keys = np.flatnonzero(closed.view(bool).ravel())
    if len(keys) == 0:
        return []
    rows, columns = np.divmod(keys, w)
    starts = np.ones(len(keys), bool)
    starts[1:] = (keys[1:] != keys[:-1] + 1) | (rows[1:] != rows[:-1])
    run = np.cumsum(starts) - 1  # the run of each foreground pixel
    runs = int(run[-1]) + 1
    upper, lower = _touching_runs(keys, columns, run, runs, w)
    fork = (np.bincount(upper, minlength=runs) >= 2) | (np.bincount(lower, minlength=runs) >= 2)
    # Without the forks every run touches at most one run above and one below: the pieces
    # are vertical chains of runs; each run finds its chain's top run by pointer jumping.
    chained = ~fork[upper] & ~fork[lower]
    top = np.arange(runs)
    top[lower[chained]] = upper[chained]
    for _ in range(int(np.ceil(np.log2(h))) + 1):
        top = top[top]
    top[fork] = -1
    pixels = np.bincount(run, minlength=runs)
    run_rows = rows[starts].astype(np.float64)
    run_centres = np.bincount(run, weights=columns, minlength=runs) / pixels
    # Straight fits of all pieces at once, from sums per piece; pieces are numbered in the
    # order of their top run's id, as `chains` below are.
    piece_of_run = np.unique(top[top >= 0], return_inverse=True)[1]
    sums = [np.bincount(piece_of_run, weights=values) for values in (
        np.ones(len(piece_of_run)), run_rows[top >= 0], run_centres[top >= 0],
        run_rows[top >= 0] ** 2, run_rows[top >= 0] * run_centres[top >= 0])]
    count, sv, su, svv, svu = sums
    spread = count * svv - sv * sv
    slopes = np.divide(count * svu - sv * su, spread, out=np.zeros_like(spread), where=spread > 0)
    intercepts = (su - slopes * sv) / count
    order = np.flatnonzero(top >= 0)
    order = order[np.lexsort((run_rows[order], top[order]))]
    chains = np.split(order, np.flatnonzero(np.diff(top[order])) + 1)
    min_pixels = max(8, MIN_PIECE_PIXELS * w * h)
    end_rows = max(3.0, END_ROWS * h)
    pieces = []
    for index, chain in enumerate(chains):
        line_pixels = int(pixels[chain].sum())
        if (len(chain) < MIN_PIECE_ROWS or line_pixels < min_pixels
                or abs(slopes[index]) > MAX_SLOPE):
            continue
        whole = (float(slopes[index]), float(intercepts[index]))
        pieces.append(_Line(run_rows[chain], run_centres[chain], line_pixels, end_rows, whole))
    return pieces


def _touching_runs(keys: np.ndarray, columns: np.ndarray, run: np.ndarray, runs: int, w: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (upper run, lower run) of runs in adjacent rows that touch, each pair once."""
    pairs = []
    for shift in (-1, 0, 1):
        inside = (columns + shift >= 0) & (columns + shift < w)
        targets = keys[inside] + w + shift
        found = np.minimum(np.searchsorted(keys, targets), len(keys) - 1)
        hit = keys[found] == targets
        pairs.append(run[inside][hit] * runs + run[found[hit]])
    unique = np.unique(np.concatenate(pairs))
    return unique // runs, unique % runs


def _straight(rows: np.ndarray, centres: np.ndarray, part: np.ndarray) -> Straight:
    """A least-squares straight u(v) through `part` of the rows, or through all of them where
    the part is too short to give a direction."""
    if part.sum() < 3 or np.ptp(rows[part]) < 2:
        part = np.ones(len(rows), bool)
    rows, centres = rows[part], centres[part]
    dv = rows - rows.mean()
    slope = float(dv @ (centres - centres.mean())) / float(dv @ dv)
    return slope, float(centres.mean() - slope * rows.mean())


def _link(pieces: list[_Line], w: int, h: int) -> list[_Line]:
    """Pieces joined into lines, longest first (the module's step 2)."""
    lines: list[_Line] = []
    highest = min((piece.top for piece in pieces), default=0)
    for piece in sorted(pieces, key=lambda p: p.top - p.bottom):
        best, best_error = None, np.inf
        below = (piece.top + piece.bottom) / 2 - highest
        for line in lines:
            error, gap = _link_error(line, piece)
            tolerance = LINK_TOLERANCE * w + LINK_PERSPECTIVE * below + LINK_SPREAD * gap
            if gap <= MAX_LINK_GAP * h and error <= tolerance and error < best_error:
                best, best_error = line, error
        if best is None:
            lines.append(piece)
        else:
            best.join(piece)
    return lines


def _link_error(line: _Line, piece: _Line) -> tuple[float, float]:
    """How far (columns, mean of the piece's two ends) the piece lies from the nearest end of
    the line extended straight, and the gap in rows between them."""
    if piece.bottom < line.top:  # the piece lies farther than the line
        gap, (slope, intercept) = line.top - piece.bottom, line.far_end
    elif piece.top > line.bottom:  # nearer
        gap, (slope, intercept) = piece.top - line.bottom, line.near_end
    else:  # beside it: the line's end nearer the piece's middle
        gap = 0
        middle = (piece.top + piece.bottom) / 2
        slope, intercept = line.far_end if middle - line.top < line.bottom - middle \
            else line.near_end
    own_slope, own_intercept = piece.near_end
    error = sum(abs((slope - own_slope) * v + intercept - own_intercept)
                for v in (piece.top, piece.bottom)) / 2
    return float(error), float(gap)


def _fit(line: _Line, w: int, h: int, rows: np.ndarray) -> np.ndarray:
    """The line's columns at `rows`: u(v) by least squares (rows centred and scaled), with one
    round of outlier rejection."""
    degree = 2 if line.bottom - line.top >= QUADRATIC_ROWS * h else 1
    middle, scale = (line.top + line.bottom) / 2, max(1.0, (line.bottom - line.top) / 2)
    powers = np.vander((line.rows - middle) / scale, degree + 1)
    coefficients = np.linalg.lstsq(powers, line.centres, rcond=None)[0]
    residuals = np.abs(powers @ coefficients - line.centres)
    limit = max(3.0 * 1.4826 * float(np.median(residuals)), OUTLIER_FLOOR * w)
    inliers = residuals <= limit
    if not inliers.all() and inliers.sum() > degree + 2:
        coefficients = np.linalg.lstsq(powers[inliers], line.centres[inliers], rcond=None)[0]
    return np.vander((rows - middle) / scale, degree + 1) @ coefficients
