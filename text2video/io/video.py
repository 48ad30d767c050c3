"""Read and write videos: uint8 ``(T, H, W, C)`` RGB numpy arrays at the boundary.

Formats by suffix:

* GIF through Pillow: every frame, palette and transparency composited to RGB (or kept as alpha when
  read with ``channels=4``), per-frame durations turned into an average frame rate. Written looping,
  with durations that add up to the asked fps; RGBA frames are written with GIF's one-bit transparency.
* MP4 / MOV / MKV / WebM / AVI through PyAV (FFmpeg): seek to a start frame, keep every k-th frame,
  stop decoding as soon as the clip is complete. MP4/MOV/MKV are written as H.264 yuv420p, WebM as
  VP9, AVI as MPEG-4 part 2; odd sizes are padded by one edge pixel to the even size yuv420p needs.
* A folder of PNG/JPG frames (natural order: ``f2.png`` before ``f10.png``), its frame rate in an
  optional ``fps.txt`` (else 8); a single image is a one-frame video. Writing to a path without a
  suffix writes such a folder; one frame written to ``.png`` is one PNG image.

Channels: frames are RGB (C = 3) by default; ``read_video(..., channels=1)`` reads grayscale (ITU-R 601
luma) and ``channels=4`` RGBA (the file's alpha, opaque where it has none). `write_video` keeps 1 and 4
channels where the format can hold them (PNG and frame folders exactly; GIF as gray, or with one-bit
transparency; MP4/WebM store gray as gray and drop alpha with a warning).

Helpers convert to and from the ``(C, T, H, W)`` float tensors in [-1, 1] used inside the package, and
`write_contact_sheet` draws several videos as one PNG grid with captions.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from text2video.errors import VideoReadError

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

GIF_SUFFIXES: frozenset[str] = frozenset({".gif"})
AV_SUFFIXES: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
#: channels -> the Pillow mode frames are read in and written from.
CHANNEL_MODES: dict[int, str] = {1: "L", 3: "RGB", 4: "RGBA"}
#: Every suffix `read_video` accepts for a file (a folder of images is accepted too).
VIDEO_SUFFIXES: frozenset[str] = GIF_SUFFIXES | AV_SUFFIXES
#: Frame rate given to a folder of frames or a single image, which carry none of their own.
DEFAULT_FRAMES_FPS = 8.0
#: A folder of frames may state its frame rate in this file (`write_video` writes it).
FRAMES_FPS_FILE = "fps.txt"
#: Browsers show GIF frames with a delay of 10 ms or less (or none) for 100 ms; so do we.
_GIF_MIN_DELAY_MS = 20
_GIF_DEFAULT_DELAY_MS = 100
# suffix -> (codec, pixel format, encoder options)
_ENCODERS: dict[str, tuple[str, str, dict[str, str]]] = {
    ".mp4": ("libx264", "yuv420p", {"crf": "18", "preset": "medium"}),
    ".m4v": ("libx264", "yuv420p", {"crf": "18", "preset": "medium"}),
    ".mov": ("libx264", "yuv420p", {"crf": "18", "preset": "medium"}),
    ".mkv": ("libx264", "yuv420p", {"crf": "18", "preset": "medium"}),
    ".webm": ("libvpx-vp9", "yuv420p", {"crf": "30", "b": "0", "deadline": "good", "cpu-used": "4"}),
    ".avi": ("mpeg4", "yuv420p", {"qscale": "2"}),
}


@dataclass(frozen=True)
class VideoInfo:
    """Cheap facts about a video, read without decoding its frames (GIF headers are walked)."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int
    format: str  # "gif", "mp4", "webm", ..., "frames" (a folder of images) or "image"
    codec: str = ""

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration": self.duration}


# ----------------------------------------------------------------------------------------------- read


def read_video(
    path: str | Path, *, start: int = 0, num_frames: int | None = None, stride: int = 1, channels: int = 3
) -> tuple[np.ndarray, float]:
    """Frames ``start, start + stride, ...`` (at most ``num_frames``) as uint8 ``(T, H, W, channels)``:
    RGB (3, default), grayscale (1) or RGBA (4).

    The returned fps is the playback rate of the returned frames: the file's rate divided by
    ``stride``, so that writing them back with it keeps real time. A clip that runs past the end of
    the file is returned short (never padded here; see `text2video.data.transforms`).

    Raises `VideoReadError` naming the file when it is missing, of an unknown format, corrupt,
    truncated before ``start``, or holds no frame.
    """
    path = Path(path)
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 1):
        raise ValueError(f"read_video({path}): need start >= 0, stride >= 1, num_frames >= 1 or None")
    mode = _channel_mode(channels, f"read_video({path})")
    kind = _kind(path)
    if kind == "gif":
        frames, fps = _read_gif(path, start, num_frames, stride, mode)
    elif kind == "av":
        frames, fps = _read_av(path, start, num_frames, stride, mode)
    else:
        frames, fps = _read_images(path, start, num_frames, stride, mode)
    if frames.shape[0] == 0:
        raise VideoReadError(f"{path}: no frame at or after frame {start}; the video is shorter than that or holds no frame")
    return frames, fps / stride


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, fps and size without decoding the pixels (raises `VideoReadError`)."""
    path = Path(path)
    kind = _kind(path)
    if kind == "gif":
        return _probe_gif(path)
    if kind == "av":
        return _probe_av(path)
    files = _image_files(path)
    with _open_image(files[0]) as im:
        width, height = im.size
    fmt = "frames" if path.is_dir() else "image"
    return VideoInfo(str(path), len(files), _frames_fps(path), height, width, fmt, files[0].suffix.lower()[1:])


def _channel_mode(channels: int, where: str) -> str:
    if channels not in CHANNEL_MODES:
        raise ValueError(f"{where}: channels must be 1 (grayscale), 3 (RGB) or 4 (RGBA), got {channels!r}")
    return CHANNEL_MODES[channels]


def _kind(path: Path) -> str:
    if not path.exists():
        raise VideoReadError(f"video not found: {path}; check the path")
    if path.is_dir():
        return "frames"
    suffix = path.suffix.lower()
    if suffix in GIF_SUFFIXES:
        return "gif"
    if suffix in AV_SUFFIXES:
        return "av"
    if suffix in IMAGE_SUFFIXES:
        return "frames"
    known = ", ".join(sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))
    raise VideoReadError(f"{path}: unknown video format {suffix!r}; readable: {known} or a folder of frames")


def _selected(total: int, start: int, num_frames: int | None, stride: int) -> range:
    picked = range(start, total, stride)
    return picked if num_frames is None else picked[:num_frames]


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoReadError(f"{path}: not a readable image ({exc}); the file is corrupt or not an image") from exc


def _gif_frame(frame: Image.Image, mode: str) -> np.ndarray:
    """Resolve the palette; RGBA keeps the transparency as alpha, RGB and L composite it over black."""
    rgba = np.asarray(frame.convert("RGBA"))
    if mode == "RGBA":
        return rgba
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = ((rgba[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    return rgb if mode == "RGB" else _luma(rgb)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 RGB -> ``(..., 1)`` grayscale, as Pillow's ``convert("L")`` (ITU-R 601-2)."""
    return np.asarray(Image.fromarray(rgb).convert("L"))[..., None]


def _image_array(image: Image.Image, mode: str) -> np.ndarray:
    """A Pillow image as uint8 ``(H, W, C)`` in ``mode`` (L keeps a trailing channel axis)."""
    array = np.asarray(image.convert(mode))
    return array[..., None] if array.ndim == 2 else array


def _gif_fps(delays_ms: Sequence[int | None]) -> float:
    delays = [_GIF_DEFAULT_DELAY_MS if not d or d < _GIF_MIN_DELAY_MS else d for d in delays_ms]
    return 1000.0 * len(delays) / sum(delays) if delays else 1000.0 / _GIF_DEFAULT_DELAY_MS


def _read_gif(path: Path, start: int, num_frames: int | None, stride: int, mode: str = "RGB") -> tuple[np.ndarray, float]:
    frames: list[np.ndarray] = []
    delays: list[int | None] = []
    try:
        with _open_image(path) as im:
            total = getattr(im, "n_frames", 1)
            wanted = set(_selected(total, start, num_frames, stride))
            for index, frame in enumerate(ImageSequence.Iterator(im)):
                delays.append(frame.info.get("duration"))
                if index in wanted:
                    frames.append(_gif_frame(frame, mode))
    except VideoReadError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, IndexError) as exc:
        raise VideoReadError(f"{path}: corrupt or truncated GIF ({exc}); re-export or delete it") from exc
    return _stack(frames, path, mode), _gif_fps(delays)


def _probe_gif(path: Path) -> VideoInfo:
    try:
        with _open_image(path) as im:
            width, height = im.size
            delays = []
            for frame in ImageSequence.Iterator(im):
                delays.append(frame.info.get("duration"))
    except VideoReadError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, IndexError) as exc:
        raise VideoReadError(f"{path}: corrupt or truncated GIF ({exc}); re-export or delete it") from exc
    return VideoInfo(str(path), len(delays), _gif_fps(delays), height, width, "gif", "gif")


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _image_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key)
    if not files:
        raise VideoReadError(f"{path}: a folder with no PNG/JPG frame; put frames in it or point at a video file")
    return files


def _read_images(path: Path, start: int, num_frames: int | None, stride: int, mode: str = "RGB") -> tuple[np.ndarray, float]:
    files = _image_files(path)
    frames = []
    for index in _selected(len(files), start, num_frames, stride):
        with _open_image(files[index]) as im:
            try:
                frames.append(_image_array(im, mode))
            except (OSError, ValueError) as exc:
                raise VideoReadError(f"{files[index]}: corrupt or truncated image ({exc})") from exc
    if len({f.shape for f in frames}) > 1:
        raise VideoReadError(f"{path}: frames of different sizes; every frame of a folder must be the same size")
    return _stack(frames, path, mode), _frames_fps(path)


def _frames_fps(path: Path) -> float:
    fps_file = path / FRAMES_FPS_FILE
    if path.is_dir() and fps_file.is_file():
        try:
            fps = float(fps_file.read_bytes().decode("utf-8", errors="replace").strip())
        except ValueError as exc:
            raise VideoReadError(f"{fps_file}: not a number ({exc}); write the frame rate, e.g. 8") from exc
        if fps > 0:
            return fps
    return DEFAULT_FRAMES_FPS


def _stack(frames: list[np.ndarray], path: Path, mode: str = "RGB") -> np.ndarray:
    if not frames:
        return np.zeros((0, 0, 0, len(mode)), dtype=np.uint8)
    try:
        return np.stack(frames)
    except ValueError as exc:  # frames of different sizes
        raise VideoReadError(f"{path}: frames of different sizes ({exc})") from exc


def _av_error_types() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError, ValueError, EOFError, IndexError)


def _av_fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


def _probe_av(path: Path) -> VideoInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            fps = _av_fps(stream)
            count = stream.frames
            if not count:  # WebM and some AVI do not store it: count packets, no decoding
                count = sum(1 for packet in container.demux(stream) if packet.size)
            ctx = stream.codec_context
            return VideoInfo(str(path), int(count), fps, ctx.height, ctx.width, path.suffix.lower()[1:], ctx.name)
    except VideoReadError:
        raise
    except _av_error_types() as exc:
        raise VideoReadError(f"{path}: cannot read video ({exc}); the file is corrupt or truncated") from exc


def _frame_index(frame: Any, origin: float, fps: float) -> int | None:
    if frame.time is None:
        return None
    return int(round((frame.time - origin) * fps))


def _decode_from(container: Any, stream: Any, seek_to: int, fps: float, origin: float) -> Iterator[tuple[int, Any]]:
    """(frame index, frame) pairs from a keyframe at or before ``seek_to`` onwards."""
    if seek_to > 0:
        target = int((seek_to / fps + origin) / stream.time_base) if stream.time_base else 0
        container.seek(target, stream=stream, backward=True, any_frame=False)
    counter: int | None = None
    for frame in container.decode(stream):
        index = _frame_index(frame, origin, fps)
        if index is None:  # no timestamps: count from where decoding started
            counter = (0 if seek_to == 0 else seek_to) if counter is None else counter + 1
            index = counter
        yield index, frame


#: Pillow mode -> the PyAV pixel format frames are decoded to.
_AV_FORMATS = {"L": "gray", "RGB": "rgb24", "RGBA": "rgba"}


def _read_av(path: Path, start: int, num_frames: int | None, stride: int, mode: str = "RGB") -> tuple[np.ndarray, float]:
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: holds no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = _av_fps(stream)
            origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            for attempt_seek in (start,) if start == 0 else (start, 0):
                frames.clear()
                overshot = False
                for index, frame in _decode_from(container, stream, attempt_seek, fps, origin):
                    if index < start or (index - start) % stride:
                        continue
                    if not frames and index > start + stride - 1 and attempt_seek:
                        overshot = True  # the seek landed past the start: decode from the top instead
                        break
                    array = frame.to_ndarray(format=_AV_FORMATS[mode])
                    frames.append(array[..., None] if array.ndim == 2 else array)
                    if num_frames is not None and len(frames) >= num_frames:
                        break
                if not overshot:
                    break
                container.seek(0, stream=stream)
    except VideoReadError:
        raise
    except _av_error_types() as exc:
        raise VideoReadError(f"{path}: cannot decode video ({exc}); the file is corrupt or truncated") from exc
    return _stack(frames, path, mode), fps


# ---------------------------------------------------------------------------------------------- write


def write_video(frames: Any, path: str | Path, fps: float = 8.0) -> Path:
    """Write frames and return the path. The format follows the suffix: ``.gif`` (looping), ``.mp4`` /
    ``.mov`` / ``.mkv`` (H.264 yuv420p), ``.webm`` (VP9), ``.avi`` (MPEG-4), ``.png`` (a single frame: one
    PNG image, e.g. the first frame ``text2video animate`` takes), no suffix (a folder of PNGs).

    ``frames``: uint8 numpy ``(T, H, W, C)`` with C in 1, 3, 4 (or ``(T, H, W)``), or a torch tensor
    ``(C, T, H, W)`` in [-1, 1] as used inside the package. Grayscale and RGBA frames stay so where the
    format holds them (see the module doc).
    """
    path = Path(path)
    if fps <= 0:
        raise ValueError(f"write_video({path}): fps must be positive, got {fps}")
    array = _as_uint8(frames)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in GIF_SUFFIXES:
        _write_gif(array, path, fps)
    elif suffix in _ENCODERS:
        if array.shape[-1] == 4:
            logger.warning(
                "%s: %s has no alpha channel; the transparency is dropped (write .png, .gif or a folder to keep it)", path, suffix
            )
        _write_av(to_rgb(array), path, fps)
    elif suffix in IMAGE_SUFFIXES:
        if len(array) != 1 or suffix != ".png":
            raise ValueError(
                f"write_video({path}): an image file holds one frame (PNG); got {len(array)} frames: write a .gif/.mp4, "
                "or a path without a suffix (a folder of PNG frames), or pass frames[:1]"
            )
        _pil_image(array[0]).save(path, format="PNG")
    elif suffix == "":
        path.mkdir(parents=True, exist_ok=True)
        width = max(4, len(str(len(array) - 1)))
        for i, frame in enumerate(array):
            _pil_image(frame).save(path / f"{i:0{width}d}.png")
        (path / FRAMES_FPS_FILE).write_text(f"{fps:g}\n")
    else:
        known = ", ".join(sorted(GIF_SUFFIXES | set(_ENCODERS)))
        raise ValueError(f"write_video({path}): unknown suffix {suffix!r}; writable: {known}, .png (one frame), or none for a PNG folder")
    return path


def _as_uint8(frames: Any) -> np.ndarray:
    """Frames as contiguous uint8 ``(T, H, W, C)`` with C in 1, 3, 4 (checked)."""
    if not isinstance(frames, np.ndarray):  # a torch tensor (C, T, H, W) in [-1, 1]
        frames = tensor_to_frames(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in CHANNEL_MODES or frames.shape[0] == 0:
        raise ValueError(f"expected frames (T, H, W, C) with T >= 1 and C in 1, 3, 4; got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}; use tensor_to_frames() for float tensors")
    return np.ascontiguousarray(frames)


def to_rgb(frames: np.ndarray, background: int = 0) -> np.ndarray:
    """uint8 ``(..., C)`` frames with C in 1, 3, 4 as RGB: gray repeated, RGBA composited over ``background``."""
    if frames.shape[-1] == 1:
        return np.ascontiguousarray(np.repeat(frames, 3, axis=-1))
    if frames.shape[-1] == 4:
        alpha = frames[..., 3:4].astype(np.uint16)
        rgb = (frames[..., :3].astype(np.uint16) * alpha + background * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    return frames


def _pil_image(frame: np.ndarray) -> Image.Image:
    """One ``(H, W, C)`` uint8 frame as a Pillow image in the mode of its channels."""
    return Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame, CHANNEL_MODES[frame.shape[-1]])


def _gif_delays_ms(num_frames: int, fps: float) -> list[int]:
    """GIF delays are whole centiseconds: spread the rounding so the delays add up to ``T / fps``."""
    ends = [round((i + 1) * 100.0 / fps) for i in range(num_frames)]
    delays_cs = [max(2, end - begin) for begin, end in zip([0, *ends[:-1]], ends)]
    return [10 * d for d in delays_cs]


#: GIF palette entries: 0..253 colours, 254 the transparent pixels of RGBA frames, 255 the nudge below.
_GIF_TRANSPARENT = 254
_GIF_NUDGE = 255


def _gif_palette_frames(array: np.ndarray) -> list[Image.Image]:
    """Quantize each frame to at most 254 colours (RGBA: pixels under half opacity become the transparent
    entry). Pillow merges a frame that looks exactly like the one before it into it (adding up the delays);
    to keep the frame count, such a frame gets its first (opaque) pixel changed by one level of blue,
    through the last palette entry."""
    images: list[Image.Image] = []
    previous: np.ndarray | None = None
    alpha = array.shape[-1] == 4
    for frame in array:
        rgb_frame = frame[..., :3] if alpha else frame
        image = Image.fromarray(np.ascontiguousarray(rgb_frame)).quantize(
            colors=254, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        palette = image.getpalette() or []
        palette = palette[: 3 * 254] + [0] * max(0, 3 * 254 - len(palette))
        if alpha:
            indices = np.asarray(image).copy()
            indices[frame[..., 3] < 128] = _GIF_TRANSPARENT
            image = Image.fromarray(indices, "P")
        image.putpalette(palette + [0, 0, 0, 0, 0, 0])
        seen = np.asarray(image.convert("RGBA" if alpha else "RGB"))
        if previous is not None and np.array_equal(seen, previous):
            opaque = np.argwhere(frame[..., 3] >= 128) if alpha else np.zeros((1, 2), dtype=int)
            y, x = (int(v) for v in (opaque[0] if len(opaque) else (0, 0)))  # an opaque pixel keeps the alpha intact
            r, g, b = (int(v) for v in rgb_frame[y, x])
            image.putpalette(palette + [0, 0, 0, r, g, b + 1 if b < 255 else b - 1])
            image.putpixel((x, y), _GIF_NUDGE)
            seen = np.asarray(image.convert("RGBA" if alpha else "RGB"))
        if alpha:
            image.info["transparency"] = _GIF_TRANSPARENT
        images.append(image)
        previous = seen
    return images


def _write_gif(array: np.ndarray, path: Path, fps: float) -> None:
    """Gray frames are stored as gray RGB (read back exactly with ``channels=1``); RGBA frames with the
    transparent entry, each frame replacing the last (disposal 2), so no frame shows through another."""
    alpha = array.shape[-1] == 4
    images = _gif_palette_frames(array if alpha else to_rgb(array))
    extra = {"transparency": _GIF_TRANSPARENT} if alpha else {}
    images[0].save(
        path,
        save_all=True,
        append_images=images[1:],
        duration=_gif_delays_ms(len(images), fps),
        loop=0,
        optimize=False,
        disposal=2 if alpha else 1,
        **extra,
    )


def _write_av(array: np.ndarray, path: Path, fps: float) -> None:
    import av

    codec, pix_fmt, options = _ENCODERS[path.suffix.lower()]
    height, width = array.shape[1:3]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:  # yuv420p needs even sizes: repeat the last row / column
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        logger.debug("%s: padded %dx%d to %dx%d for yuv420p", path, width, height, width + pad_w, height + pad_h)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = array.shape[2], array.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = dict(options)
        for frame in array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ------------------------------------------------------------------------------------- tensor helpers


def frames_to_tensor(frames: Any) -> torch.Tensor:
    """uint8 ``(T, H, W, C)`` -> float32 ``(C, T, H, W)`` in [-1, 1]; a batch ``(B, T, H, W, C)`` gives
    ``(B, C, T, H, W)``. Accepts numpy arrays or torch tensors."""
    import torch

    tensor = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"frames_to_tensor expects uint8 frames, got {tensor.dtype}")
    if tensor.ndim == 4:
        tensor = tensor.permute(3, 0, 1, 2)
    elif tensor.ndim == 5:
        tensor = tensor.permute(0, 4, 1, 2, 3)
    else:
        raise ValueError(f"frames_to_tensor expects (T, H, W, C) or (B, T, H, W, C), got shape {tuple(tensor.shape)}")
    return tensor.float().div(127.5).sub(1.0).contiguous()


def tensor_to_frames(tensor: Any) -> np.ndarray:
    """float ``(C, T, H, W)`` in [-1, 1] -> uint8 ``(T, H, W, C)`` (clamped, rounded); a batch
    ``(B, C, T, H, W)`` gives ``(B, T, H, W, C)``. Accepts torch tensors or numpy arrays."""
    import torch

    tensor = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
    if tensor.ndim == 4:
        tensor = tensor.permute(1, 2, 3, 0)
    elif tensor.ndim == 5:
        tensor = tensor.permute(0, 2, 3, 4, 1)
    else:
        raise ValueError(f"tensor_to_frames expects (C, T, H, W) or (B, C, T, H, W), got shape {tuple(tensor.shape)}")
    return tensor.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).contiguous().numpy()


# -------------------------------------------------------------------------------------- contact sheet


def write_contact_sheet(
    videos: Any,
    path: str | Path,
    captions: Sequence[str] | None = None,
    *,
    max_frames: int = 8,
    min_height: int = 64,
    pad: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Path:
    """A PNG grid: one row per video (at most ``max_frames`` frames, evenly spaced), its caption above it.

    ``videos``: a sequence of uint8 ``(T, H, W, C)`` arrays or ``(C, T, H, W)`` tensors in [-1, 1], or a
    batch tensor ``(B, C, T, H, W)``. Small videos are enlarged by a whole factor (nearest neighbour)
    to at least ``min_height`` pixels so they stay legible.
    """
    from .grid import video_grid

    path = Path(path)
    if not isinstance(videos, (list, tuple)):
        videos = list(videos) if getattr(videos, "ndim", 0) == 5 else [videos]
    rows = [to_rgb(_as_uint8(v), background[0]) for v in videos]
    if not rows:
        raise ValueError("write_contact_sheet: no video to draw")
    captions = list(captions) if captions is not None else [""] * len(rows)
    if len(captions) != len(rows):
        raise ValueError(f"write_contact_sheet: {len(rows)} videos but {len(captions)} captions")
    strips = []  # each video as one image: its picked frames side by side, enlarged to min_height
    for frames in rows:
        picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
        scale = max(1, -(-min_height // frames.shape[1]))
        big = frames[picks].repeat(scale, axis=1).repeat(scale, axis=2)
        gap = np.full((big.shape[1], pad, 3), background, dtype=np.uint8)
        tiles = [part for tile in big for part in (tile, gap)][:-1]
        strips.append(np.concatenate(tiles, axis=1)[None])
    widest = max(strip.shape[2] for strip in strips)
    strips = [np.pad(s, ((0, 0), (0, 0), (0, widest - s.shape[2]), (0, 0)), constant_values=background[0]) for s in strips]
    sheet = video_grid(strips, captions, columns=1, min_cell=0, pad=pad, background=background)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, format="PNG")
    return path


# ------------------------------------------------------------------------------------------------ info


def info() -> dict[str, Any]:
    """Formats this installation reads and writes (``text2video info`` prints it)."""
    try:
        import av

        codecs = set(av.codecs_available)
        av_version = av.__version__
    except ImportError:  # pragma: no cover - av is a dependency
        codecs, av_version = set(), None
    writable = [".gif"] + [s for s, (codec, _, _) in _ENCODERS.items() if codec in codecs] + ["(folder of PNG)"]
    readable = sorted(GIF_SUFFIXES) + (sorted(AV_SUFFIXES) if av_version else []) + ["(folder of PNG/JPG)"]
    return {"video_io": {"read": readable, "write": writable, "pyav": av_version}}
