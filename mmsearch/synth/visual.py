"""Pictures: backgrounds and drifting coloured shapes, as RGB arrays and straight into yuv420p frames."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from . import families as fam
from .vocabulary import (
    BACKGROUND_MAX,
    COLOUR_JITTER,
    SHAPE_SIZE_FRACTION,
    VISUAL_COLOURS,
    parse_visual_caption,
)


# --------------------------------------------------------------------------- drawing
def random_background_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random dark RGB colour (each channel 0..70)."""
    c = rng.integers(0, BACKGROUND_MAX + 1, size=3)
    return (int(c[0]), int(c[1]), int(c[2]))


def _jitter_colour(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    base = np.array(VISUAL_COLOURS[colour], dtype=np.int64)
    c = np.clip(base + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _check_dims(width: Any, height: Any) -> None:
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 8:
            raise UsageError(f"{name} must be an int >= 8, got {v!r}")


def _check_count(name: str, v: Any, lo: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise UsageError(f"{name} must be an int >= {lo}, got {v!r}")


def _noise_frames(
    rng: np.random.Generator, colour: tuple[int, int, int], width: int, height: int, n: int, sigma: float
) -> np.ndarray:
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    base = np.asarray(colour, dtype=np.float32)
    for i in range(n):
        if sigma > 0:
            f = rng.standard_normal((height, width, 3), dtype=np.float32)
            f *= sigma
            f += base
            np.rint(f, out=f)
            np.clip(f, 0, 255, out=f)
            out[i] = f
        else:
            out[i] = colour
    return out


def render_background(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_frames: int = 1,
    colour: tuple[int, int, int] | None = None,
    noise_sigma: float = 4.0,
) -> np.ndarray:
    """Dark background frames, uint8 ``(n_frames, H, W, 3)``: a flat colour plus gaussian noise.

    ``colour`` defaults to :func:`random_background_colour`; each frame gets fresh noise.
    """
    _check_dims(width, height)
    _check_count("n_frames", n_frames)
    if noise_sigma < 0:
        raise UsageError(f"noise_sigma must be >= 0, got {noise_sigma!r}")
    if colour is None:
        colour = random_background_colour(rng)
    colour = _as_rgb(colour)
    return _noise_frames(rng, colour, width, height, n_frames, float(noise_sigma))


def _as_rgb(colour: Any) -> tuple[int, int, int]:
    try:
        c = tuple(int(v) for v in colour)
    except TypeError as e:
        raise UsageError(f"colour must be an (r, g, b) triple, got {colour!r}") from e
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise UsageError(f"colour must be an (r, g, b) triple of 0..255, got {colour!r}")
    return c  # type: ignore[return-value]


def _shape_mask(
    shape: str, size: float, x: float, y: float, plane_w: int, plane_h: int, scale: int = 1
) -> tuple[int, int, int, int, np.ndarray]:
    """Mask of ``shape`` with bounding box ``[x, x+size) x [y, y+size)`` (full-res pixels).

    Evaluated on a plane whose pixels are ``scale`` full-res pixels wide (2 for
    yuv420p chroma).  Returns ``(i0, i1, j0, j1, mask)`` for ``plane[i0:i1, j0:j1]``.
    """
    j0 = max(0, int(math.floor(x / scale)))
    j1 = min(plane_w, int(math.ceil((x + size) / scale)))
    i0 = max(0, int(math.floor(y / scale)))
    i1 = min(plane_h, int(math.ceil((y + size) / scale)))
    u = (np.arange(j0, j1, dtype=np.float32) + 0.5) * scale - x  # horizontal offset in bbox
    v = (np.arange(i0, i1, dtype=np.float32) + 0.5) * scale - y
    u = u[None, :]
    v = v[:, None]
    half = size / 2.0
    if shape == "circle":
        mask = (u - half) ** 2 + (v - half) ** 2 <= half * half
    elif shape == "square":
        mask = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    elif shape == "triangle":  # apex at top centre, base along the bottom edge
        mask = (v >= 0) & (v < size) & (np.abs(u - half) <= v / 2.0)
    else:
        raise UsageError(f"unknown shape {shape!r}")
    return i0, i1, j0, j1, mask


@dataclass(frozen=True)
class _ShapeTrack:
    """One visual event: a shape of fixed size and colour moving linearly."""

    shape: str
    rgb: tuple[int, int, int]
    size: float
    start_xy: tuple[float, float]
    end_xy: tuple[float, float]

    def xy(self, progress: float) -> tuple[float, float]:
        (x0, y0), (x1, y1) = self.start_xy, self.end_xy
        return x0 + (x1 - x0) * progress, y0 + (y1 - y0) * progress


def _family_colour(rng: np.random.Generator, colour: str, family: str) -> tuple[int, int, int]:
    """A shade of ``colour``: brightness factor from the family's band, then per-channel jitter."""
    base = np.array(VISUAL_COLOURS[colour], dtype=np.float64) * fam.draw_band(rng, fam.SHADE_BANDS[family])
    jitter = fam.SHADE_JITTER[family]
    c = np.clip(np.rint(base) + rng.integers(-jitter, jitter + 1, size=3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _plan_shape(
    rng: np.random.Generator, caption: str, width: int, height: int, max_drift: float = 0.15, family: str = "default",
    region: tuple[float, float] = (0.0, 1.0),
) -> _ShapeTrack:
    """A shape's track; ``region`` (fractions of the width) keeps it, drift included, within those columns
    (two shapes in the two halves never overlap)."""
    colour, shape = parse_visual_caption(caption)
    if family == "default":
        rgb = _jitter_colour(rng, colour)
        frac = rng.uniform(*SHAPE_SIZE_FRACTION)
    else:
        rgb = _family_colour(rng, colour, family)
        frac = fam.draw_band(rng, fam.SHAPE_SIZE_BANDS[family])
    left, right = region[0] * width, region[1] * width
    size = float(min(frac * height, right - left - 2, height - 2))
    xmin, xmax, ymax = left, right - size, height - size
    x0, y0 = rng.uniform(xmin, xmax), rng.uniform(0, ymax)
    dx, dy = rng.uniform(-max_drift, max_drift) * width, rng.uniform(-max_drift, max_drift) * height
    x1, y1 = float(np.clip(x0 + dx, xmin, xmax)), float(np.clip(y0 + dy, 0, ymax))
    return _ShapeTrack(shape, rgb, size, (float(x0), float(y0)), (x1, y1))


def random_halves(rng: np.random.Generator) -> list[tuple[float, float]]:
    """The frame's left and right halves (fractions of its width), in a random order: where two shapes
    shown together go (``region`` of :func:`render_visual_event`)."""
    return [(0.0, 0.5), (0.5, 1.0)][:: 1 if rng.random() < 0.5 else -1]


def _draw_rgb(frame: np.ndarray, track: _ShapeTrack, progress: float) -> None:
    h, w = frame.shape[:2]
    x, y = track.xy(progress)
    i0, i1, j0, j1, mask = _shape_mask(track.shape, track.size, x, y, w, h)
    frame[i0:i1, j0:j1][mask] = track.rgb


def render_visual_event(
    rng: np.random.Generator,
    caption: str,
    width: int,
    height: int,
    n_frames: int = 1,
    background: np.ndarray | tuple[int, int, int] | None = None,
    *,
    max_drift: float = 0.15,
    family: fam.Family = "default",
    region: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Render a visual event as uint8 ``(n_frames, H, W, 3)`` with the shape drifting slowly.

    ``background``: None (random dark colour + noise, or the family's background), an
    RGB colour (plus noise), or an array ``(H, W, 3)`` / ``(n_frames, H, W, 3)`` used as
    is. ``family`` (:mod:`mmsearch.synth.families`) sets the shape's size and shade;
    ``region`` (fractions of the width) the columns the shape stays in.
    """
    family = fam.check_family(family)  # type: ignore[assignment]
    parse_visual_caption(caption)
    _check_dims(width, height)
    _check_count("n_frames", n_frames)
    if isinstance(background, np.ndarray):
        bg = background
        if bg.ndim == 3:
            bg = np.broadcast_to(bg, (n_frames, *bg.shape))
        if bg.shape != (n_frames, height, width, 3):
            raise UsageError(
                f"background array has shape {background.shape}, expected ({height}, {width}, 3) "
                f"or ({n_frames}, {height}, {width}, 3)"
            )
        frames = np.array(bg, dtype=np.uint8)
    elif background is None and family != "default":
        frames = render_family_background(rng, width, height, n_frames, family=family)
    else:
        colour = random_background_colour(rng) if background is None else _as_rgb(background)
        frames = _noise_frames(rng, colour, width, height, n_frames, 4.0)
    track = _plan_shape(rng, caption, width, height, max_drift, family, region)
    for i in range(n_frames):
        _draw_rgb(frames[i], track, i / (n_frames - 1) if n_frames > 1 else 0.0)
    return frames


# --------------------------------------------------------------------------- variation families
def render_family_background(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_frames: int = 1,
    *,
    family: fam.Family = "train",
    noise_sigma: float | None = None,
) -> np.ndarray:
    """Backgrounds of a variation family, uint8 ``(n_frames, H, W, 3)``; each frame gets fresh noise.

    ``"train"``: a flat dark colour or a vertical / horizontal gradient between two dark
    colours, noise sigma 0-10. ``"heldout"``: a radial gradient (lighter centre), sigma 3-8.
    """
    family = fam.check_family(family)  # type: ignore[assignment]
    if family == "default":
        return render_background(rng, width, height, n_frames, noise_sigma=4.0 if noise_sigma is None else noise_sigma)
    _check_dims(width, height)
    _check_count("n_frames", n_frames)
    top = fam.BACKGROUND_MAX_OF[family]
    c0 = rng.integers(0, top + 1, size=3).astype(np.float32)
    c1 = rng.integers(0, top + 1, size=3).astype(np.float32)
    style = fam.pick(rng, fam.BACKGROUNDS[family])
    if style == "flat":
        weight = np.zeros((height, width), np.float32)
    elif style == "vertical":
        weight = np.broadcast_to(np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None], (height, width))
    elif style == "horizontal":
        weight = np.broadcast_to(np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :], (height, width))
    else:  # radial: c0 at the centre, c1 at the corners
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        r = np.hypot((xx - width / 2) / (width / 2), (yy - height / 2) / (height / 2)) / math.sqrt(2)
        weight = np.clip(r, 0.0, 1.0)
    base = c0 + (c1 - c0) * weight[..., None]
    if noise_sigma is None:
        noise_sigma = float(rng.uniform(0.0, 10.0) if family == "train" else rng.uniform(3.0, 8.0))
    out = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for i in range(n_frames):
        f = base + noise_sigma * rng.standard_normal(base.shape, dtype=np.float32) if noise_sigma > 0 else base
        out[i] = np.clip(np.rint(f), 0, 255)
    return out


def degrade_image(rng: np.random.Generator, image: np.ndarray, family: fam.Family = "train") -> np.ndarray:
    """What cameras and codecs do to a frame, as a family draws it (uint8 ``(H, W, 3)`` in and out).

    ``"train"``: JPEG at quality 25-90 (half the frames) and a gaussian blur of radius
    0.3-1.2 (30 %). ``"heldout"``: a 3x3 box blur and gaussian noise of sigma 2-5.
    ``"default"`` returns the frame unchanged.
    """
    import io

    from PIL import Image, ImageFilter

    family = fam.check_family(family)  # type: ignore[assignment]
    if family == "default":
        return image
    img = Image.fromarray(image)
    if family == "train":
        if rng.random() < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
        if rng.random() < 0.5:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=int(rng.integers(25, 91)))
            img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        return np.array(img)  # a writable copy
    img = img.filter(ImageFilter.BoxBlur(1))
    noisy = np.asarray(img, dtype=np.float32) + rng.uniform(2.0, 5.0) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- yuv420p
def _rgb_to_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.601 limited-range conversion (what swscale assumes for untagged streams)."""
    r, g, b = (rgb[..., k].astype(np.float32) for k in range(3))
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    return y, u, v


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _rgb_frame_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)`` -> PyAV yuv420p layout ``(H*3//2, W)`` (Y, then U, then V planes)."""
    h, w = rgb.shape[:2]
    y, u, v = _rgb_to_yuv(rgb)
    out = np.empty((h * 3 // 2, w), dtype=np.uint8)
    out[:h] = _to_u8(y)
    pu, pv = _chroma_planes(out, h, w)
    pu[:] = _to_u8(u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    pv[:] = _to_u8(v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    return out


def _chroma_planes(buf: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    flat = buf.reshape(-1)  # planes are stored back to back: Y (h*w), U and V (h/2 * w/2 each)
    q = (h // 2) * (w // 2)
    return flat[h * w : h * w + q].reshape(h // 2, w // 2), flat[h * w + q : h * w + 2 * q].reshape(h // 2, w // 2)


def _draw_yuv(buf: np.ndarray, h: int, w: int, track: _ShapeTrack, yuv: tuple[int, int, int], progress: float) -> None:
    x, y = track.xy(progress)
    i0, i1, j0, j1, mask = _shape_mask(track.shape, track.size, x, y, w, h)
    buf[:h][i0:i1, j0:j1][mask] = yuv[0]
    pu, pv = _chroma_planes(buf, h, w)
    i0, i1, j0, j1, mask = _shape_mask(track.shape, track.size, x, y, w // 2, h // 2, scale=2)
    pu[i0:i1, j0:j1][mask] = yuv[1]
    pv[i0:i1, j0:j1][mask] = yuv[2]
