"""The 15 MNIST-C corruptions (Mu & Gilmer 2019), written from the parameters of the authors' code
(google-research/mnist-c, ``corruptions.py``); the line corruptions live in ``mnistc_lines.py``.

Every corruption maps a batch of float images ``x`` (N, 28, 28) in [0, 1] and a ``numpy.random.Generator`` to a
float batch in [0, 1] of the same shape. Random parameters (noise, angles, directions) are drawn *per image* from
the generator, so the batch is reproducible from the seed. Severities are those the authors' functions default to,
which is how the published dataset was made: shot noise 5, impulse noise 4, glass blur 1, motion blur 1, shear 2,
scale 3, rotate 2, brightness 5, translate 3, fog 5, spatter 4 (the others have no severity).

Where this code knowingly differs from the reference (a different random stream is unavoidable):

- glass blur: the reference calls scikit-image's ``gaussian(..., multichannel=True)`` on a 2-D image, which in the
  scikit-image of 2019 treated the 28 columns as channels, so the blur runs along the rows (vertical) axis only.
  The published dataset has that one-axis blur and so does this code (``sigma=(0.7, 0)``).
- motion blur: the reference calls ImageMagick's MotionBlurImage through Wand (not installed here). This is
  ImageMagick's algorithm written out: a one-sided 21-tap kernel (width 2*radius+1) with weights exp(-i^2/2s^2),
  normalised, tap i read at (row + round(i sin a), col + round(i cos a)) with edge replication, rounded to 8 bits.
- shear: scikit-image changed the meaning of ``AffineTransform(shear=)`` in 0.19; the matrix of the version the
  authors used, [[1, -sin c], [0, cos c]], is written out here so that the data do not depend on the installed
  version. Rotation and scale matrices are written out the same way.
- brightness: the reference round-trips grey -> RGB -> HSV, adds 0.5 to V (clipped), HSV -> RGB -> grey. For a
  grey pixel that is exactly min(x + 0.5, 1) (rgb2gray's weights sum to 1); the test checks the equivalence with
  scikit-image's colour conversions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import feature, transform, util

SIZE = 28
CENTRE = 13.5  # the reference keeps the image centre (13.5, 13.5) fixed under shear, rotate and scale


def shot_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    c = 3.0  # severity 5 of [60, 25, 12, 5, 3]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # severity 4 of [.03, .06, .09, .17, .27]: each pixel set to 0 or 1 (even odds) with probability 0.17
    return np.clip(util.random_noise(x, mode="s&p", amount=0.17, rng=rng), 0, 1)


def _gauss_rows(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's gaussian (mode 'nearest', truncate 4) along the row axis only: see the module docstring."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma, 0), mode="nearest", truncate=4.0)


def glass_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma, delta, iterations = 0.7, 1, 2  # severity 1
    img = np.uint8(_gauss_rows(x, sigma) * 255)  # the reference truncates to uint8 here
    n = len(img)
    every = np.arange(n)
    for _ in range(iterations):
        # the reference walks h, w = 27..2 (descending) and, with probability 1/2, swaps pixel (h, w) with
        # (h + dy, w + dx), dx, dy drawn from numpy's randint(-delta, delta), i.e. {-1, 0}; done for all images
        # at once, one position at a time, since later swaps see earlier ones
        for h in range(SIZE - delta, delta, -1):
            for w in range(SIZE - delta, delta, -1):
                swap = rng.random(n) < 0.5
                dx, dy = rng.integers(-delta, delta, size=(2, n))
                i = every[swap]
                h2, w2 = h + dy[swap], w + dx[swap]
                a = img[i, h, w].copy()
                img[i, h, w] = img[i, h2, w2]
                img[i, h2, w2] = a
    return np.clip(_gauss_rows(img / 255.0, sigma), 0, 1)


def motion_kernel(radius: float = 10, sigma: float = 3) -> np.ndarray:
    """ImageMagick's motion-blur weights: width 2*ceil(radius)+1, exp(-i^2 / (2 sigma^2)) for i >= 0, sum 1."""
    i = np.arange(2 * int(np.ceil(radius)) + 1, dtype=np.float64)
    k = np.exp(-(i**2) / (2 * sigma**2))
    return k / k.sum()


def motion_blur_at(x: np.ndarray, angles_deg: np.ndarray, radius: float = 10, sigma: float = 3) -> np.ndarray:
    """Motion blur of each image along its own angle (degrees), as ImageMagick computes it; 8-bit output."""
    k = motion_kernel(radius, sigma)
    taps = np.arange(len(k))
    a = np.deg2rad(angles_deg)[:, None]
    # ImageMagick: offset = ceil(i * cos|sin(a) - 0.5); x (column) uses cos, y (row) uses sin
    dc = np.ceil(taps * np.cos(a) - 0.5).astype(int)  # (N, taps)
    dr = np.ceil(taps * np.sin(a) - 0.5).astype(int)
    n = len(x)
    rows = np.arange(SIZE)[None, :, None]
    cols = np.arange(SIZE)[None, None, :]
    img = np.arange(n)[:, None, None]
    out = np.zeros_like(x, dtype=np.float64)
    for j, weight in enumerate(k):
        r = np.clip(rows + dr[:, j, None, None], 0, SIZE - 1)  # edge replication (ImageMagick's virtual pixels)
        c = np.clip(cols + dc[:, j, None, None], 0, SIZE - 1)
        out += weight * x[img, r, c]
    return np.clip(np.round(out * 255) / 255, 0, 1)  # the reference goes through an 8-bit PNG


def motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # severity 1: radius 10, sigma 3, angle uniform in [-45, 45) degrees; the input is 8-bit (a PNG) in the reference
    return motion_blur_at(np.round(x * 255) / 255, rng.uniform(-45, 45, size=len(x)), 10, 3)


def centred_affine(a: np.ndarray) -> np.ndarray:
    """3x3 matrix of the 2x2 linear part ``a`` plus the translation that keeps (13.5, 13.5) fixed."""
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = CENTRE * (1 - a.sum(axis=1))
    return m


def warp_each(x: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """skimage ``warp`` with each matrix as the inverse map ((col, row) of the output -> input), bilinear, zero
    outside, as the reference."""
    out = np.empty_like(x, dtype=np.float64)
    for i, m in enumerate(matrices):
        out[i] = transform.warp(x[i], inverse_map=transform.AffineTransform(matrix=m), order=1, mode="constant",
                                cval=0.0)
    return np.clip(out, 0, 1)


def _signs(rng: np.random.Generator, size) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=size)


def shear_matrix(c: float) -> np.ndarray:
    return centred_affine(np.array([[1.0, -np.sin(c)], [0.0, np.cos(c)]]))


def shear(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    c = 0.4 * _signs(rng, len(x))  # severity 2 of [0.2, 0.4, 0.6, 0.8, 1.0], random direction
    return warp_each(x, [shear_matrix(v) for v in c])


def rotation_matrix(c: float) -> np.ndarray:
    return centred_affine(np.array([[np.cos(c), -np.sin(c)], [np.sin(c), np.cos(c)]]))


def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    c = 0.4 * _signs(rng, len(x))  # severity 2: 0.4 rad (about 23 degrees), random direction
    return warp_each(x, [rotation_matrix(v) for v in c])


def scale_matrix(s: float) -> np.ndarray:
    return centred_affine(np.diag([s, s]))


def scale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # severity 3: the inverse map scales by 1/0.7, so the digit shrinks to 70% about the centre (no randomness)
    return warp_each(x, [scale_matrix(1 / 0.7)] * len(x))


def translate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # severity 3: the inverse map adds (dx, dy) = (+-3, +-3), so the digit moves by (-dx, -dy); zeros come in
    d = 3.0 * _signs(rng, (len(x), 2))
    mats = []
    for dx, dy in d:
        m = np.eye(3)
        m[:2, 2] = dx, dy
        mats.append(m)
    return warp_each(x, mats)


def brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + 0.5, 0, 1)  # severity 5: V + 0.5 in HSV, which for grey pixels is this (module docstring)


def stripe(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    out[:, :, :7] = 1 - out[:, :, :7]  # invert columns 0-6 and 21-27
    out[:, :, 21:] = 1 - out[:, :, 21:]
    return out


def plasma_fractal(rng: np.random.Generator, n: int, mapsize: int = 256, decay: float = 3.0) -> np.ndarray:
    """(n, mapsize, mapsize) diamond-square height maps in [0, 1], the reference's variant: each new point is the
    mean of its four neighbours plus wibble * U(-wibble, wibble), wibble starting at 100 and divided by ``decay``
    after every level; the map wraps around."""
    assert mapsize & (mapsize - 1) == 0
    m = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def noisy_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        # squares: the centre of each square from its four corners
        corners = m[:, 0:mapsize:step, 0:mapsize:step]
        total = corners + np.roll(corners, -1, axis=1)
        total = total + np.roll(total, -1, axis=2)
        m[:, half:mapsize:step, half:mapsize:step] = noisy_mean(total)
        # diamonds: edge midpoints from the two centres and two corners beside them
        centres = m[:, half:mapsize:step, half:mapsize:step]
        corners = m[:, 0:mapsize:step, 0:mapsize:step]
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        m[:, 0:mapsize:step, half:mapsize:step] = noisy_mean(top)
        left = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        m[:, half:mapsize:step, 0:mapsize:step] = noisy_mean(left)
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / m.max(axis=(1, 2), keepdims=True)


def fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    strength, decay = 3.0, 1.4  # severity 5
    peak = x.max(axis=(1, 2), keepdims=True)
    out = x + strength * plasma_fractal(rng, len(x), 256, decay)[:, :SIZE, :SIZE]
    return np.clip(out * peak / (peak + strength), 0, 1)


def spatter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    loc, scale_, sigma, threshold, sigma_mask = 0.65, 0.3, 1.0, 0.65, 1.5  # severity 4 (the "mud" variant)
    liquid = ndimage.gaussian_filter(rng.normal(loc, scale_, x.shape), sigma=(0, sigma, sigma), mode="nearest",
                                     truncate=4.0)
    mask = ndimage.gaussian_filter((liquid > threshold).astype(np.float64), sigma=(0, sigma_mask, sigma_mask),
                                   mode="nearest", truncate=4.0)
    mask[mask < 0.8] = 0
    return np.clip(x * (1 - mask) + 63 / 255 * mask, 0, 1)


def canny_edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # scikit-image's defaults written out: sigma 1, hysteresis thresholds 10% and 20% of the float range
    return np.stack([feature.canny(img, sigma=1.0, low_threshold=0.1, high_threshold=0.2) for img in x]
                    ).astype(np.float64)
