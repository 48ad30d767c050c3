"""One generation as the web page (or its API) asks for it: fill in the model's defaults, check every value
against the model's limits, run the pipeline with progress and cancel, and write each video (MP4 + GIF)
with its settings JSON into the output folder before anything is shown.

No Gradio here: `Studio` is plain Python, used by `text2video.serve.app` and testable alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import ConfigError, Text2VideoError
from .catalog import ModelCatalog
from .limits import ControlLimits, limits_for

logger = logging.getLogger(__name__)

__all__ = ["MODES", "GenerationCancelled", "Request", "Result", "Studio", "command_for"]

#: text: prompt only; image: first frame given; first_last: first and last frame given (infilling);
#: videos: two clips given, videos in between (noise-space interpolation).
MODES = ("text", "image", "first_last", "videos")
#: The inputs each mode needs.
MODE_INPUTS = {"text": (), "image": ("first",), "first_last": ("first", "last"), "videos": ("video1", "video2")}

Progress = Callable[[int, int], None]


class GenerationCancelled(Text2VideoError):
    """A person pressed cancel; nothing of this request is written."""


@dataclass
class Request:
    """What a person asks for. ``None`` takes the model's default; ``seed=None`` draws a random seed.
    In ``videos`` mode ``num_videos`` is the number of videos from the first clip to the second (>= 2)."""

    mode: str = "text"
    model: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    sampler: Optional[str] = None
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    seed: Optional[int] = None
    frames: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    fps: Optional[float] = None
    num_videos: int = 1
    strength: float = 0.7
    random_seed: bool = field(default=False, repr=False)


@dataclass
class Result:
    """One written video: MP4 (H.264 yuv420p), GIF, and its settings JSON (which holds the command)."""

    video: Path
    gif: Path
    settings_file: Path
    settings: dict[str, Any]

    @property
    def command(self) -> str:
        return self.settings["command"]

    @property
    def caption(self) -> str:
        s = self.settings
        return f"{s['prompt'] or '(no prompt)'} · seed {s['seed']}"


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "video"


def _as_int(name: str, value: Any) -> Optional[int]:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if number != int(number):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _or(value: Any, default: Any) -> Any:
    """``value``, or ``default`` when it was not given (None or an empty field; 0 is a value)."""
    return default if value is None else value


def _as_float(name: str, value: Any) -> Optional[float]:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


def fit_image(image: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """An uploaded picture as uint8 ``(height, width, channels)``: alpha dropped, resized (bicubic), and
    turned grey for one-channel models."""
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ConfigError(f"an image must be (H, W) or (H, W, C), got shape {array.shape}")
    picture = Image.fromarray(array).convert("RGB")
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    if channels == 1:
        return np.array(picture.convert("L"))[..., None]
    if channels != 3:
        raise ConfigError(f"the model generates {channels}-channel videos; only 1 or 3 channels can be given as pictures")
    return np.array(picture)


def fit_clip(frames: np.ndarray, num_frames: int, height: int, width: int, channels: int, what: str) -> np.ndarray:
    """The first ``num_frames`` frames of a clip, each fitted like `fit_image`: uint8 ``(T, H, W, C)``."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ConfigError(f"{what} must be frames (T, H, W, C), got shape {frames.shape}")
    if frames.shape[0] < num_frames:
        raise ConfigError(f"{what} has {frames.shape[0]} frames; set frames to {frames.shape[0]} or less, or give a longer clip")
    return np.stack([fit_image(frame, height, width, channels) for frame in frames[:num_frames]])


def command_for(settings: dict[str, Any], inputs: dict[str, str]) -> str:
    """The ``text2video`` command that makes the same videos (same model, seed and settings) as MP4."""
    mode = settings["mode"]
    if mode == "text":
        args = ["text2video", "generate", settings["prompt"]]
    elif mode == "image":
        args = ["text2video", "animate", inputs["first"], "--prompt", settings["prompt"]]
    elif mode == "first_last":
        args = ["text2video", "interpolate", "--first", inputs["first"], "--last", inputs["last"], "--prompt", settings["prompt"]]
    else:
        args = ["text2video", "interpolate", "--video1", inputs["video1"], "--video2", inputs["video2"],
                "--num-interp", str(settings["num_videos"]), "--strength", f"{settings['strength']:g}"]  # fmt: skip
        if settings["prompt"]:
            args += ["--prompt", settings["prompt"]]
    args += ["--model", settings["model_path"], *settings.get("model_options", [])]
    if settings.get("device_given"):
        args += ["--device", settings["device"]]
    args += ["--sampler", settings["sampler"], "--steps", str(settings["steps"]),
             "--guidance-scale", f"{settings['guidance_scale']:g}", "--seed", str(settings["base_seed"])]  # fmt: skip
    if mode != "videos":
        args += ["--frames", str(settings["frames"])]
    if mode == "text":
        args += ["--height", str(settings["height"]), "--width", str(settings["width"])]
    if settings.get("takes_fps"):
        args += ["--fps", f"{settings['fps']:g}"]
    if settings.get("negative_prompt") and mode != "videos":
        args += ["--negative-prompt", settings["negative_prompt"]]
    if mode in ("text", "image") and settings["num_videos"] > 1:
        args += ["--batch-size", str(settings["num_videos"])]
    args += ["--format", "mp4"]
    return shlex.join(args)


def _write_atomic(write: Callable[[Path], Any], path: Path) -> Path:
    """Write through a temporary name in the same folder, then rename: a crash leaves no half file."""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    write(partial)
    os.replace(partial, path)
    return path


class Studio:
    """Generations for a catalog of models, one at a time per device, each written to ``output_dir``."""

    def __init__(self, catalog: ModelCatalog, output_dir: str | Path = "outputs/serve") -> None:
        self.catalog = catalog
        self.output_dir = Path(output_dir)
        self.results: list[Result] = []  # this server's results, oldest first
        self._device_lock = threading.Lock()  # one model on one device: one generation at a time
        self._results_lock = threading.Lock()

    # ------------------------------------------------------------------------------ settings

    def limits(self, model: Optional[str] = None) -> ControlLimits:
        return limits_for(self.catalog.pipeline(model))

    def resolve(self, request: Request) -> Request:
        """``request`` with the model's defaults filled in, a seed drawn when none is given, every value
        checked (`ConfigError` naming the control, the value and the allowed range)."""
        if request.mode not in MODES:
            raise ConfigError(f"unknown mode {request.mode!r}; choose one of: {', '.join(MODES)}")
        name = self.catalog.check_name(request.model)
        pipe = self.catalog.pipeline(name)
        limits = limits_for(pipe)
        d = pipe.defaults
        seed = _as_int("seed", request.seed)
        random_seed = seed is None
        if random_seed:
            seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        if not 0 <= seed < 2**63:
            raise ConfigError(f"seed {seed} must be between 0 and {2**63 - 1}")
        resolved = replace(
            request,
            model=name,
            prompt=str(request.prompt or ""),
            negative_prompt=str(request.negative_prompt or "") if limits.takes_text else "",
            sampler=str(request.sampler or d.sampler).lower().replace("-", "_"),
            steps=_or(_as_int("steps", request.steps), d.steps),
            guidance_scale=_or(_as_float("guidance scale", request.guidance_scale), d.guidance_scale),
            seed=seed,
            frames=_or(_as_int("frames", request.frames), d.num_frames),
            height=_or(_as_int("height", request.height), d.height),
            width=_or(_as_int("width", request.width), d.width),
            fps=_or(_as_float("fps", request.fps), d.fps) if limits.takes_fps else d.fps,
            num_videos=_or(_as_int("number of videos", request.num_videos), 1),
            strength=_or(_as_float("strength", request.strength), 0.7),
            random_seed=random_seed,
        )
        if not limits.takes_text:
            resolved.guidance_scale = 1.0  # nothing to guide with
        limits.check(
            name, sampler=resolved.sampler, steps=resolved.steps, guidance_scale=resolved.guidance_scale, frames=resolved.frames,
            height=resolved.height, width=resolved.width, fps=resolved.fps, num_videos=resolved.num_videos,
        )  # fmt: skip
        given = len(MODE_INPUTS[resolved.mode]) if resolved.mode in ("image", "first_last") else 0
        if given and resolved.frames <= given:
            raise ConfigError(f"frames {resolved.frames} leaves nothing to generate after {given} given frame(s); use at least {given + 1}")
        if resolved.mode == "videos":
            if resolved.num_videos < 2:
                raise ConfigError(f"between two videos, number of videos {resolved.num_videos} must be at least 2 (the two ends)")
            if not 0.0 < resolved.strength <= 1.0:
                raise ConfigError(f"strength {resolved.strength} must be in (0, 1]: how far both clips are noised")
        return resolved

    # ------------------------------------------------------------------------------ generation

    def generate(
        self,
        request: Request,
        inputs: Optional[dict[str, np.ndarray]] = None,
        *,
        progress: Optional[Progress] = None,
        cancelled: Optional[Callable[[], bool]] = None,
    ) -> list[Result]:
        """Run ``request`` and write its videos; returns them once every file is on disk.

        ``inputs``: ``first`` / ``last`` pictures (H, W, C) or ``video1`` / ``video2`` clips (T, H, W, C), uint8,
        as the mode needs; they are fitted to the requested size and saved beside the videos.
        ``progress(done, total)`` follows the sampler's steps; ``cancelled()`` returning True stops at the
        next step with `GenerationCancelled`.
        """
        request = self.resolve(request)
        inputs = inputs or {}
        missing = [key for key in MODE_INPUTS[request.mode] if inputs.get(key) is None]
        if missing:
            raise ConfigError(
                f"{request.mode.replace('_', ' and ')} mode needs {' and '.join(missing)}: upload {'them' if len(missing) > 1 else 'it'}"
            )
        kind = "TextToVideoPipeline" if request.mode == "text" else "InterpolationPipeline"
        pipe = self.catalog.pipeline(request.model, kind)
        fitted = self._fit_inputs(request, inputs, int(pipe.defaults.channels))

        def step(done: int, total: int) -> None:
            if cancelled is not None and cancelled():
                raise GenerationCancelled(f"cancelled after {done} of {total} steps; nothing was written")
            if progress is not None:
                progress(done, total)

        with self._device_lock:
            if cancelled is not None and cancelled():
                raise GenerationCancelled("cancelled before it started; nothing was written")
            start = time.perf_counter()
            out = self._run(pipe, request, fitted, step)
            seconds = time.perf_counter() - start
        return self._write(request, out, fitted, seconds)

    def _fit_inputs(self, request: Request, inputs: dict[str, np.ndarray], channels: int) -> dict[str, np.ndarray]:
        fitted = {}
        for key in MODE_INPUTS[request.mode]:
            if key.startswith("video"):
                fitted[key] = fit_clip(inputs[key], request.frames, request.height, request.width, channels, f"video {key[-1]}")
            else:
                fitted[key] = fit_image(inputs[key], request.height, request.width, channels)
        return fitted

    def _run(self, pipe: Any, r: Request, fitted: dict[str, np.ndarray], step: Progress) -> Any:
        fps = r.fps if limits_for(pipe).takes_fps else None
        common = dict(steps=r.steps, guidance_scale=r.guidance_scale, seed=r.seed, sampler=r.sampler, fps=fps,
                      callback=step, progress=False)  # fmt: skip
        negative = r.negative_prompt or None
        if r.mode == "text":
            return pipe(r.prompt, num_frames=r.frames, height=r.height, width=r.width, negative_prompt=negative,
                        num_videos_per_prompt=r.num_videos, **common)  # fmt: skip
        if r.mode == "image":
            return pipe(
                fitted["first"], r.prompt, num_frames=r.frames, negative_prompt=negative, num_videos_per_prompt=r.num_videos, **common
            )
        if r.mode == "first_last":
            return pipe.infill(fitted["first"], fitted["last"], num_frames=r.frames, prompt=r.prompt, negative_prompt=negative,
                               num_videos_per_prompt=r.num_videos, **common)  # fmt: skip
        from ..io.video import frames_to_tensor

        common["num_steps"] = common.pop("steps")
        return pipe.interpolate(frames_to_tensor(fitted["video1"]), frames_to_tensor(fitted["video2"]), num_interp_frames=r.num_videos,
                                prompt=r.prompt or None, strength=r.strength, **common)  # fmt: skip

    # ------------------------------------------------------------------------------ files

    def _run_folder(self, request: Request) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}_{request.mode}_{_slug(request.prompt, 32)}"
        for n in range(1, 10_000):
            folder = self.output_dir / (base if n == 1 else f"{base}-{n}")
            try:
                folder.mkdir(parents=True)
                return folder
            except FileExistsError:
                continue
        raise ConfigError(f"could not make a new folder for {base} in {self.output_dir}")  # pragma: no cover

    def _write(self, request: Request, out: Any, fitted: dict[str, np.ndarray], seconds: float) -> list[Result]:
        from .. import __version__
        from ..io.video import write_video

        folder = self._run_folder(request)
        input_paths = {}
        for key, array in fitted.items():  # pictures as PNG, clips as PNG folders: lossless, readable by the CLI
            target = folder / (f"input_{key}.png" if array.ndim == 3 else f"input_{key}")
            if array.ndim == 3:
                from PIL import Image

                Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(target)
            else:
                write_video(array, target, fps=request.fps)
            input_paths[key] = str(target.resolve())
        pipe_facts = self.catalog.describe(request.model)
        base = {
            "text2video": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mode": request.mode,
            "model": request.model,
            "model_path": self.catalog.spec(request.model),
            "model_options": self.catalog.option_flags(),
            "device": pipe_facts["device"],
            "device_given": self.catalog.device is not None,
            "takes_fps": pipe_facts["takes_fps"],
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "sampler": request.sampler,
            "steps": request.steps,
            "guidance_scale": request.guidance_scale,
            "base_seed": request.seed,
            "random_seed": request.random_seed,
            "frames": request.frames,
            "height": request.height,
            "width": request.width,
            "fps": float(out.fps),
            "num_videos": request.num_videos,
            "seconds": round(seconds, 2),
            "inputs": input_paths,
        }
        if request.mode == "videos":
            base["strength"] = request.strength
        base["command"] = command_for(base, input_paths)
        weights = out.extras.get("weights") if request.mode == "videos" else None
        results = []
        for i in range(len(out)):
            seed = out.seeds[i] if out.seeds and i < len(out.seeds) else request.seed
            stem = f"{i:03d}_{_slug(request.prompt)}_seed{seed}"
            frames = out.frames(i)
            mp4 = _write_atomic(lambda p, f=frames: write_video(f, p, fps=out.fps), folder / f"{stem}.mp4")
            gif = _write_atomic(lambda p, f=frames: write_video(f, p, fps=out.fps), folder / f"{stem}.gif")
            settings = {**base, "index": i, "seed": int(seed), "files": {"mp4": str(mp4), "gif": str(gif)}}
            settings["frames"], settings["height"], settings["width"] = (int(n) for n in frames.shape[:3])
            if weights is not None:
                settings["weight"] = weights[i]
            file = folder / f"{stem}.json"
            settings["files"]["settings"] = str(file)
            _write_atomic(lambda p, s=settings: p.write_text(json.dumps(s, indent=2) + "\n"), file)
            results.append(Result(mp4, gif, file, settings))
        with self._results_lock:
            self.results.extend(results)
        logger.info("wrote %d video(s) to %s in %.1f s", len(results), folder, seconds)
        return results

    def recent(self) -> list[Result]:
        """This server's results, newest first."""
        with self._results_lock:
            return list(reversed(self.results))
