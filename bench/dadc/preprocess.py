"""Turn a drawing into an MNIST-like digit, the way MNIST itself was made (LeCun et al.): crop the digit's bounding
box, resize it (aspect ratio kept) so that its longer side is 20 pixels, and place it in a 28x28 frame so that its
centre of mass sits at the frame's centre. White digit on black, float32 in [0, 1].

Input arrives as untrusted bytes from a web page: a ``data:image/png;base64,...`` URL (the drawing canvas) or raw
image bytes (an upload). Sizes are checked *before* anything is decoded, and nothing here ever touches a file path.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from bench.errors import DataError

SIZE = 28  # output frame
BOX = 20  # the digit's longer side after resizing
MAX_BYTES = 2 * 1024 * 1024  # encoded image bytes accepted from the page
MAX_SIDE = 2048  # pixels, either side, read from the image header before decoding
MIN_SIDE = 8
INK = 0.1  # a pixel counts as ink (for the bounding box and the blank check) above this fraction of full white
MIN_INK_PIXELS = 4


def decode_data_url(text: str) -> bytes:
    """The image bytes of a ``data:image/...;base64,`` URL (what a canvas's ``toDataURL()`` gives)."""
    if not isinstance(text, str) or not text.strip():
        raise DataError("the canvas is empty: draw a digit first")
    head, sep, payload = text.strip().partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise DataError("the drawing is malformed: expected a data:image/...;base64 URL from the canvas")
    if len(payload) > MAX_BYTES * 4 // 3 + 4:
        raise DataError(f"the drawing is too large ({len(payload) * 3 // 4 // 1024} KiB encoded; the limit is "
                        f"{MAX_BYTES // 1024} KiB)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("the drawing is malformed: its base64 payload does not decode") from None


def decode_image(data: bytes) -> np.ndarray:
    """Grey levels (H, W) float32 in [0, 1] of PNG/JPEG/... bytes, transparent areas taken as black. Too many
    bytes or a header announcing too many pixels are refused before the pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise DataError("the upload is empty: draw a digit or upload an image")
    if len(data) > MAX_BYTES:
        raise DataError(f"the image is too large ({len(data) // 1024} KiB; the limit is {MAX_BYTES // 1024} KiB)")
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:  # lazy: only the header is read here
            w, h = im.size
            if max(w, h) > MAX_SIDE:
                raise DataError(f"the image is {w}x{h} pixels; the limit is {MAX_SIDE} pixels a side")
            if min(w, h) < MIN_SIDE:
                raise DataError(f"the image is {w}x{h} pixels; draw on a canvas at least {MIN_SIDE} pixels a side")
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except Image.DecompressionBombError:  # Pillow's own header check, for sizes far beyond ours
        raise DataError(f"the image announces far too many pixels; the limit is {MAX_SIDE} pixels a side") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise DataError("the upload is not a readable image (PNG, JPEG, ...)") from None
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return grey * rgba[..., 3]  # composite over black


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """The 28x28 MNIST-like image (float32 in [0, 1], white on black) of a grey drawing (H, W) in [0, 1].

    A drawing that is mostly light (dark ink on white paper) is inverted first, judged by its border. The result
    is scaled so that its brightest pixel is 1 (a thin stroke loses contrast when shrunk)."""
    from PIL import Image

    img = np.asarray(grey, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < MIN_SIDE or max(img.shape) > MAX_SIDE:
        raise DataError(f"expected a grey image between {MIN_SIDE} and {MAX_SIDE} pixels a side, got shape "
                        f"{tuple(img.shape)}")
    if not np.isfinite(img).all():
        raise DataError("the image has non-finite values")
    img = np.clip(img, 0.0, 1.0)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    if border.mean() > 0.5:
        img = 1.0 - img
    ink = img > INK
    if ink.sum() < MIN_INK_PIXELS:
        raise DataError("the canvas is blank: draw a digit first")
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((nw, nh), Image.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0.0, None)
    if small.max() <= 0:
        raise DataError("the canvas is blank: draw a digit first")
    small /= small.max()
    # centre of mass of the resized digit, then the integer offset that puts it at the frame's centre (14, 14),
    # kept inside the frame (a very lopsided digit is shifted as far as the frame allows)
    cy, cx = centre_of_mass(small)
    mid = (SIZE - 1) / 2  # 13.5: the frame's centre in pixel-centre coordinates
    top = int(np.clip(round(mid - cy), 0, SIZE - nh))
    left = int(np.clip(round(mid - cx), 0, SIZE - nw))
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + nh, left : left + nw] = small
    return out


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    """(row, col) centre of mass of a grey image, in pixel-centre coordinates (pixel (0, 0) is at 0.0)."""
    ys, xs = np.indices(img.shape)
    m = img.sum()
    return float((ys * img).sum() / m), float((xs * img).sum() / m)


def to_png(img: np.ndarray) -> bytes:
    """Lossless 8-bit grey PNG bytes of a float image in [0, 1]."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """uint8 (H, W) grey levels of stored PNG bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def preprocess(data: str | bytes) -> np.ndarray:
    """A data URL (canvas) or image bytes (upload) -> the 28x28 MNIST-like float image."""
    raw = decode_data_url(data) if isinstance(data, str) else data
    return to_mnist(decode_image(raw))
