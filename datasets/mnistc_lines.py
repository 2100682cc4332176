"""MNIST-C's line corruptions, dotted line and zigzag, from the geometry of the authors' code (google-research/mnist-c):
an anti-aliased line of intensity log(1 - d/2.3) + 1 (clipped to [0, 1]) at vertical distance d from the line,
added to the image and clipped. Same conventions as ``mnistc_corruptions``: float (N, 28, 28) in [0, 1] in and out.
"""

from __future__ import annotations

import numpy as np

SIZE = 28
WIDTH = 2.3  # the intensity falls to 0 at d = 2.3 * (1 - 1/e) ~ 1.45 pixels from the line


def line_from_points(c0: float, r0: float, c1: float, r1: float) -> np.ndarray:
    """(28, 28) intensity of the line through (col c0, row r0) and (c1, r1), kept to columns floor(c0) ..
    ceil(c1) - 1 (so a line ending at column 27 leaves column 27 blank, as in the reference); a vertical segment
    (c0 == c1) draws nothing, as in the reference."""
    if c1 == c0:
        return np.zeros((SIZE, SIZE))
    cols = np.arange(SIZE, dtype=np.float64)[None, :]
    rows = np.arange(SIZE, dtype=np.float64)[:, None]
    slope = (r1 - r0) / (c1 - c0)
    dist = np.clip(np.abs(rows - (slope * (cols - c0) + r0)), 0, WIDTH - 1e-10)
    out = np.clip(np.log(1 - dist / WIDTH) + 1, 0, 1)
    out[:, : int(np.floor(c0))] = 0
    out[:, int(np.ceil(c1)) :] = 0
    return out


def dotted_line_mask(r0: int, r1: int) -> np.ndarray:
    """The line from (col 0, row r0) to (col 27, row r1) with column pairs 0-1, 4-5, ..., 24-25 blanked."""
    line = line_from_points(0, r0, SIZE - 1, r1)
    for start in range(0, SIZE - 2, 4):
        line[:, start : start + 2] = 0
    return line


def dotted_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ends = rng.integers(0, SIZE - 1, size=(len(x), 2))  # numpy's randint(0, 27): rows 0..26
    return np.clip(x + np.stack([dotted_line_mask(int(a), int(b)) for a, b in ends]), 0, 1)


def zigzag_points(r0: float, r1: float, c0: float = 2, c1: float = 25, length: float = 2.0, amplitude: float = 2.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Corner points (cols, rows) of the reference's zigzag: along a straight segment of length d from (0, 0),
    corners at distance (2i+1)*length alternating +-amplitude across it, a last point at d (with the reference's
    offset r_last / (2 (d - max_c))), rotated onto the segment (c0, r0) -> (c1, r1)."""
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    pts = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - length) // (2 * length)) + 1):
        r_i = (-1) ** i * amplitude
        pts.append(((2 * i + 1) * length, r_i))
    max_c = 2 * length * (d // (2 * length))
    if d != max_c:
        pts.append((d, r_i / (2 * (d - max_c))))
    p = np.array(pts).T
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot @ p
    return cs + c0, rs + r0


def zigzag_one(img: np.ndarray, r0: float, r1: float) -> np.ndarray:
    cs, rs = zigzag_points(r0, r1)
    out = img.copy()
    for i in range(1, len(cs)):
        out = np.clip(out + line_from_points(cs[i - 1], rs[i - 1], cs[i], rs[i]), 0, 1)
    return out


def zigzag(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r0 = rng.integers(0, SIZE - 1, size=len(x))  # randint(0, 27)
    r1 = r0 + rng.integers(-5, 5, size=len(x))  # randint(-5, 5): -5..4
    return np.stack([zigzag_one(img, float(a), float(b)) for img, a, b in zip(x, r0, r1)])
