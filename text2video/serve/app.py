"""The Gradio page of `text2video serve`: text to video, image to video, and this server's gallery.

Needs the ``serve`` extra (``pip install "text2video[serve]"``). The work is done by `Studio`; this module
lays out the controls, turns errors into messages in the page, and offers the same functions as an
HTTP API (``/generate``, ``/animate``, ``/interpolate``; see docs/serve.md for a ``gradio_client`` example).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

try:
    import gradio as gr
    from gradio.data_classes import FileData
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    from ..errors import ConfigError

    raise ConfigError('text2video serve needs Gradio: pip install "text2video[serve]" (or run scripts/setup.sh)') from exc

from ..errors import Text2VideoError
from .limits import ControlLimits
from .studio import GenerationCancelled, Request, Result, Studio

logger = logging.getLogger(__name__)

__all__ = ["build_app", "CONCURRENCY_ID"]

#: Every event that runs a model shares this queue slot: one generation at a time on the device.
CONCURRENCY_ID = "generate"

IMAGE_MODES = [("First frame", "image"), ("First and last frame", "first_last"), ("Between two videos", "videos")]

#: Small videos are scaled up in the page: keep their pixels sharp.
CSS = "video { image-rendering: pixelated; }"


# ------------------------------------------------------------------------------------------ helpers


def _markdown_facts(facts: dict[str, Any]) -> str:
    """The catalog's description of a model as a short Markdown table."""
    rows = []
    for key, value in facts.items():
        if key == "defaults":
            value = ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif key == "parameters" and isinstance(value, int):
            value = f"{value:,}"
        rows.append(f"| {key.replace('_', ' ')} | {value if value is not None else '—'} |")
    return "| | |\n| --- | --- |\n" + "\n".join(rows)


def _files_of(results: list[Result]) -> list[str]:
    return [str(path) for r in results for path in (r.video, r.gif)]


def _status(results: list[Result]) -> str:
    s = results[0].settings
    seed = f"seed {s['base_seed']}" + (" (drawn at random)" if s["random_seed"] else "")
    count = f"{len(results)} video{'s' if len(results) != 1 else ''}"
    return (
        f"{count}, {s['frames']} frames of {s['width']}x{s['height']}, {seed}, {s['seconds']:.1f} s. Saved in `{results[0].video.parent}`"
    )


@dataclass
class Controls:
    """The sampling controls of one tab."""

    sampler: Any
    steps: Any
    guidance_scale: Any
    seed: Any
    random_seed: Any
    frames: Any
    height: Any
    width: Any
    fps: Any
    num_videos: Any

    def inputs(self) -> list[Any]:
        return [self.sampler, self.steps, self.guidance_scale, self.seed, self.random_seed, self.frames,
                self.height, self.width, self.fps, self.num_videos]  # fmt: skip

    def for_model(self, limits: ControlLimits, defaults: Any) -> list[Any]:
        """Updates that set every control to a model's defaults and ranges (in `inputs` order)."""
        l = limits  # noqa: E741
        return [
            gr.update(choices=list(l.samplers), value=defaults.sampler),
            gr.update(minimum=l.steps.minimum, maximum=min(l.steps.maximum, 250), value=defaults.steps),
            gr.update(
                minimum=l.guidance_scale.minimum, maximum=l.guidance_scale.maximum, value=defaults.guidance_scale, interactive=l.takes_text
            ),  # fmt: skip
            gr.update(),
            gr.update(),
            gr.update(minimum=l.frames.minimum, maximum=l.frames.maximum, step=l.frames.step, value=defaults.num_frames),
            gr.update(value=defaults.height, info=f"{l.height.describe()} pixels"),
            gr.update(value=defaults.width, info=f"{l.width.describe()} pixels"),
            gr.update(value=defaults.fps, visible=l.takes_fps),
            gr.update(),
        ]


def _controls(limits: ControlLimits, defaults: Any, prefix: str) -> Controls:
    l = limits  # noqa: E741
    with gr.Row():
        sampler = gr.Dropdown(list(l.samplers), value=defaults.sampler, label="Sampler", elem_id=f"{prefix}-sampler")
        steps = gr.Slider(l.steps.minimum, min(l.steps.maximum, 250), value=defaults.steps, step=1, label="Steps",
                          elem_id=f"{prefix}-steps")  # fmt: skip
        guidance = gr.Slider(l.guidance_scale.minimum, l.guidance_scale.maximum, value=defaults.guidance_scale, step=0.5,
                             label="Guidance scale", info="1 turns guidance off", interactive=l.takes_text,
                             elem_id=f"{prefix}-guidance")  # fmt: skip
    with gr.Row():
        seed = gr.Number(value=0, precision=0, label="Seed", info="video i uses seed + i", elem_id=f"{prefix}-seed")
        random_seed = gr.Checkbox(value=True, label="Random seed", info="draw one; it is shown in the seed box",
                                  elem_id=f"{prefix}-random")  # fmt: skip
        num_videos = gr.Slider(1, l.num_videos.maximum, value=1, step=1, label="Number of videos", elem_id=f"{prefix}-count")
    with gr.Row():
        frames = gr.Slider(l.frames.minimum, l.frames.maximum, value=defaults.num_frames, step=l.frames.step, label="Frames",
                           elem_id=f"{prefix}-frames")  # fmt: skip
        height = gr.Number(value=defaults.height, precision=0, label="Height", info=f"{l.height.describe()} pixels",
                           elem_id=f"{prefix}-height")  # fmt: skip
        width = gr.Number(value=defaults.width, precision=0, label="Width", info=f"{l.width.describe()} pixels",
                          elem_id=f"{prefix}-width")  # fmt: skip
        fps = gr.Number(value=defaults.fps, label="Frames per second", info="the model is conditioned on it",
                        visible=l.takes_fps, elem_id=f"{prefix}-fps")  # fmt: skip
    return Controls(sampler, steps, guidance, seed, random_seed, frames, height, width, fps, num_videos)


@dataclass
class Outputs:
    """What a generating tab shows: the video, this request's videos, downloads, settings, command, status."""

    video: Any
    videos: Any
    files: Any
    settings: Any
    command: Any
    status: Any

    def all(self) -> list[Any]:
        return [self.video, self.videos, self.files, self.settings, self.command, self.status]

    @staticmethod
    def values(results: list[Result]) -> list[Any]:
        return [
            str(results[0].video),
            gr.update(value=[(str(r.video), r.caption) for r in results], visible=len(results) > 1),
            _files_of(results),
            [r.settings for r in results] if len(results) > 1 else results[0].settings,
            results[0].command,
            _status(results),
        ]


def _outputs(prefix: str) -> Outputs:
    video = gr.Video(label="Video", autoplay=True, loop=True, interactive=False, height=360, elem_id=f"{prefix}-video")
    videos = gr.Gallery(label="All videos of this request", columns=4, visible=False, elem_id=f"{prefix}-videos")
    status = gr.Markdown(elem_id=f"{prefix}-status")
    files = gr.File(label="Download (MP4 and GIF)", file_count="multiple", interactive=False, elem_id=f"{prefix}-files")
    with gr.Accordion("Settings of this result", open=False):
        command = gr.Textbox(label="The same videos from the command line", lines=2, max_lines=6, interactive=False,
                             buttons=["copy"], elem_id=f"{prefix}-command")  # fmt: skip
        settings = gr.JSON(label="Settings (also saved as JSON next to each video)", elem_id=f"{prefix}-settings")
    return Outputs(video, videos, files, settings, command, status)


# ------------------------------------------------------------------------------------------ the app


class ServeApp:
    """The page's handlers around one `Studio` (cancel requests are kept per browser session)."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._cancel_at: dict[str, float] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ running

    @staticmethod
    def submitted() -> float:
        """When a person pressed generate (kept in the tab's state: cancel applies to what came before it)."""
        return time.monotonic()

    def cancel(self, request: gr.Request) -> str:
        with self._lock:
            self._cancel_at[getattr(request, "session_hash", None) or ""] = time.monotonic()
        return "Cancelling: the video stops at the next step and nothing of it is written."

    def _run(self, req: Request, inputs: dict[str, Any], request: Optional[gr.Request], progress: Any,
             submitted: Optional[float] = None) -> list[Result]:  # fmt: skip
        """Run through the studio; a person's mistakes become messages in the page (`gr.Error`), not tracebacks."""

        def step(done: int, total: int) -> None:
            progress((done, total), desc="sampling", unit="steps")

        cancelled = None
        if request is not None and submitted is not None:
            session = getattr(request, "session_hash", None) or ""
            cancelled = lambda: self._cancel_at.get(session, 0.0) > submitted  # noqa: E731
        try:
            return self.studio.generate(req, inputs, progress=step, cancelled=cancelled)
        except GenerationCancelled:
            raise
        except Text2VideoError as exc:
            raise gr.Error(str(exc), title="Not generated", print_exception=False) from None
        except (RuntimeError, ValueError, OSError) as exc:  # e.g. out of memory, or a size the network cannot take
            logger.exception("generation failed")
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise gr.Error(f"the model could not generate this: {first}", title="Generation failed", print_exception=False) from None

    def _show(self, run: Callable[[], list[Result]]) -> list[Any]:
        """The outputs of a tab (and its seed box) for ``run``'s results; a cancelled run changes only the status."""
        try:
            results = run()
        except GenerationCancelled as exc:
            message = str(exc)
            return [gr.update()] * 5 + [f"{message[:1].upper()}{message[1:]}.", gr.update()]
        return [*Outputs.values(results), results[0].settings["base_seed"]]

    @staticmethod
    def _request(mode: str, model: str, prompt: str, negative: str, sampler: str, steps: Any, guidance: Any, seed: Any,
                 random_seed: bool, frames: Any, height: Any, width: Any, fps: Any, num_videos: Any, strength: Any = 0.7) -> Request:  # fmt: skip
        return Request(mode=mode, model=model or "", prompt=prompt or "", negative_prompt=negative or "", sampler=sampler or None,
                       steps=steps, guidance_scale=guidance, seed=None if random_seed else seed, frames=frames, height=height,
                       width=width, fps=fps, num_videos=num_videos, strength=strength)  # fmt: skip

    def text_to_video(self, submitted, model, prompt, negative, sampler, steps, guidance, seed, random_seed, frames, height, width,
                      fps, num_videos, request: gr.Request, progress=gr.Progress()):  # fmt: skip
        req = self._request("text", model, prompt, negative, sampler, steps, guidance, seed, random_seed, frames, height, width,
                            fps, num_videos)  # fmt: skip
        return self._show(lambda: self._run(req, {}, request, progress, submitted))

    def image_to_video(self, submitted, model, mode, first, last, video1, video2, prompt, negative, sampler, steps, guidance, seed,
                       random_seed, frames, height, width, fps, num_videos, num_interp, strength, request: gr.Request,
                       progress=gr.Progress()):  # fmt: skip
        from ..io.video import read_video

        count = num_interp if mode == "videos" else num_videos
        req = self._request(mode, model, prompt, negative, sampler, steps, guidance, seed, random_seed, frames, height, width,
                            fps, count, strength)  # fmt: skip
        inputs: dict[str, Any] = {"first": first, "last": last}
        try:
            for key, path in (("video1", video1), ("video2", video2)):
                inputs[key] = read_video(path)[0] if path else None
        except Text2VideoError as exc:
            raise gr.Error(str(exc), title="Not generated", print_exception=False) from None
        return self._show(lambda: self._run(req, inputs, request, progress, submitted))

    # ------------------------------------------------------------------------------ gallery, model

    def gallery(self) -> tuple[list[tuple[str, str]], list[Result]]:
        """This server's results, newest first, and the same list for the page's state (the gallery a person
        sees stays matched to its results while other tabs add more)."""
        recent = self.studio.recent()
        return [(str(r.video), r.caption) for r in recent], recent

    def gallery_select(self, shown: list[Result], evt: gr.SelectData) -> list[Any]:
        if not shown or not 0 <= evt.index < len(shown):
            return [None, [], None, "", ""]
        r = shown[evt.index]
        return [str(r.video), _files_of([r]), r.settings, r.command, r.caption]

    def model_changed(self, name: str, *, tabs: list[Controls]) -> list[Any]:
        try:
            pipe = self.studio.catalog.pipeline(name)
            facts = self.studio.catalog.describe(name)
        except Text2VideoError as exc:
            raise gr.Error(str(exc), title="Model not loaded", print_exception=False) from None
        limits = self.studio.limits(name)
        updates = [_markdown_facts(facts)]
        for controls in tabs:
            updates += controls.for_model(limits, pipe.defaults)
        return updates

    # ------------------------------------------------------------------------------ API

    def api_generate(
        self,
        prompt: str,
        model: str = "",
        negative_prompt: str = "",
        sampler: str = "",
        steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        seed: Optional[int] = None,
        frames: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        fps: Optional[float] = None,
        num_videos: int = 1,
    ) -> tuple[list[FileData], list[dict]]:
        """Text to video. Empty or missing values take the model's defaults; seed None draws one.

        Returns the MP4 files and, for each, its settings (prompt, seed, sizes, the equivalent command...).
        """
        req = Request(mode="text", model=model, prompt=prompt, negative_prompt=negative_prompt, sampler=sampler or None,
                      steps=steps, guidance_scale=guidance_scale, seed=seed, frames=frames, height=height, width=width,
                      fps=fps, num_videos=num_videos)  # fmt: skip
        return self._api_answer(self._run(req, {}, None, _no_progress))

    def api_animate(
        self,
        image: FileData,
        prompt: str = "",
        last_image: Optional[FileData] = None,
        model: str = "",
        negative_prompt: str = "",
        sampler: str = "",
        steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        seed: Optional[int] = None,
        frames: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
        fps: Optional[float] = None,
        num_videos: int = 1,
    ) -> tuple[list[FileData], list[dict]]:
        """Image to video: ``image`` is the first frame; with ``last_image`` the video ends on it.

        Returns the MP4 files and their settings, as /generate.
        """
        inputs = {"first": _read_picture(image), "last": _read_picture(last_image) if last_image else None}
        req = Request(mode="first_last" if last_image else "image", model=model, prompt=prompt, negative_prompt=negative_prompt,
                      sampler=sampler or None, steps=steps, guidance_scale=guidance_scale, seed=seed, frames=frames,
                      height=height, width=width, fps=fps, num_videos=num_videos)  # fmt: skip
        return self._api_answer(self._run(req, inputs, None, _no_progress))

    def api_interpolate(
        self,
        video1: FileData,
        video2: FileData,
        prompt: str = "",
        num_videos: int = 5,
        strength: float = 0.7,
        model: str = "",
        sampler: str = "",
        steps: Optional[int] = None,
        guidance_scale: Optional[float] = None,
        seed: Optional[int] = None,
        frames: Optional[int] = None,
        height: Optional[int] = None,
        width: Optional[int] = None,
    ) -> tuple[list[FileData], list[dict]]:
        """Between two videos: ``num_videos`` videos going from ``video1`` to ``video2`` (their first ``frames`` frames).

        Returns the MP4 files and their settings, as /generate.
        """
        from ..io.video import read_video

        try:
            inputs = {"video1": read_video(_path_of(video1))[0], "video2": read_video(_path_of(video2))[0]}
        except Text2VideoError as exc:
            raise gr.Error(str(exc), title="Not generated", print_exception=False) from None
        req = Request(mode="videos", model=model, prompt=prompt, sampler=sampler or None, steps=steps, guidance_scale=guidance_scale,
                      seed=seed, frames=frames, height=height, width=width, num_videos=num_videos, strength=strength)  # fmt: skip
        return self._api_answer(self._run(req, inputs, None, _no_progress))

    @staticmethod
    def _api_answer(results: list[Result]) -> tuple[list[FileData], list[dict]]:
        return [FileData(path=str(r.video), orig_name=r.video.name) for r in results], [r.settings for r in results]


def _no_progress(*_args: Any, **_kwargs: Any) -> None:
    return None


def _path_of(file: Any) -> str:
    path = getattr(file, "path", None) or (file.get("path") if isinstance(file, dict) else file)
    if not path:
        raise gr.Error("a file is missing: upload it", title="Not generated", print_exception=False)
    return str(path)


def _read_picture(file: Any) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    path = _path_of(file)
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise gr.Error(
            f"{path} is not a readable picture ({exc}); upload a PNG or JPEG", title="Not generated", print_exception=False
        ) from None


def build_app(studio: Studio) -> gr.Blocks:
    """The page for ``studio``'s models. Launch it with `launch` (or ``.queue().launch(...)``)."""
    app = ServeApp(studio)
    catalog = studio.catalog
    default = catalog.default
    pipe = catalog.pipeline(default)
    limits = studio.limits(default)
    defaults = pipe.defaults
    several = len(catalog.names) > 1

    with gr.Blocks(title="text2video", analytics_enabled=False) as demo:
        gr.Markdown("## text2video\nGenerate videos with the models this server loaded. Every result is saved with its settings "
                    f"in `{studio.output_dir}`.")  # fmt: skip
        with gr.Row():
            model = gr.Dropdown(catalog.names, value=default, label="Model", visible=several, elem_id="model", scale=1)
        with gr.Accordion(f"About the model{'s' if several else ''}", open=False):
            about = gr.Markdown(_markdown_facts(catalog.describe(default)), elem_id="about")

        with gr.Tabs():
            with gr.Tab("Text to video", id="text", elem_id="tab-text"):
                with gr.Row():
                    with gr.Column(scale=1):
                        t_prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a red circle moving left", elem_id="t-prompt")
                        t_negative = gr.Textbox(label="Negative prompt", placeholder="what the video should not show",
                                                visible=limits.takes_text, elem_id="t-negative")  # fmt: skip
                        with gr.Row():
                            t_go = gr.Button("Generate", variant="primary", elem_id="t-generate")
                            t_stop = gr.Button("Cancel", variant="stop", elem_id="t-cancel")
                        t_controls = _controls(limits, defaults, "t")
                    with gr.Column(scale=1):
                        t_out = _outputs("t")

            with gr.Tab("Image to video", id="image", elem_id="tab-image"):
                with gr.Row():
                    with gr.Column(scale=1):
                        i_mode = gr.Radio(IMAGE_MODES, value="image", label="Given", elem_id="i-mode",
                                          info="pictures and clips are resized to the height and width below")  # fmt: skip
                        with gr.Row():
                            i_first = gr.Image(label="First frame", type="numpy", image_mode="RGB", sources=["upload", "clipboard"],
                                               elem_id="i-first")  # fmt: skip
                            i_last = gr.Image(label="Last frame", type="numpy", image_mode="RGB", sources=["upload", "clipboard"],
                                              visible=False, elem_id="i-last")  # fmt: skip
                        with gr.Row(visible=False) as i_clips:
                            video_types = [".mp4", ".gif", ".webm", ".mov", ".mkv", ".avi"]
                            i_video1 = gr.File(label="First video", file_types=video_types, elem_id="i-video1")
                            i_video2 = gr.File(label="Second video", file_types=video_types, elem_id="i-video2")
                        i_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="i-prompt")
                        i_negative = gr.Textbox(label="Negative prompt", visible=limits.takes_text, elem_id="i-negative")
                        with gr.Row():
                            i_go = gr.Button("Generate", variant="primary", elem_id="i-generate")
                            i_stop = gr.Button("Cancel", variant="stop", elem_id="i-cancel")
                        i_controls = _controls(limits, defaults, "i")
                        with gr.Row(visible=False) as i_between:
                            i_interp = gr.Slider(2, limits.num_videos.maximum, value=5, step=1, label="Videos from one clip to the other",
                                                 elem_id="i-interp")  # fmt: skip
                            i_strength = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="Strength",
                                                   info="how far both clips are noised (1: pure noise)", elem_id="i-strength")  # fmt: skip
                    with gr.Column(scale=1):
                        i_out = _outputs("i")

            with gr.Tab("Gallery", id="gallery", elem_id="tab-gallery") as g_tab:
                gr.Markdown("Results since this server started, newest first. Select one to see its settings.")
                g_refresh = gr.Button("Refresh", size="sm", elem_id="g-refresh")
                g_gallery = gr.Gallery(label="Results", columns=6, allow_preview=False, elem_id="g-gallery")
                with gr.Row():
                    with gr.Column(scale=1):
                        g_video = gr.Video(label="Selected", autoplay=True, loop=True, interactive=False, height=360,
                                           elem_id="g-video")  # fmt: skip
                        g_caption = gr.Markdown()
                    with gr.Column(scale=1):
                        g_files = gr.File(label="Download (MP4 and GIF)", file_count="multiple", interactive=False, elem_id="g-files")
                        g_command = gr.Textbox(label="The same videos from the command line", lines=2, max_lines=6,
                                               interactive=False, buttons=["copy"], elem_id="g-command")  # fmt: skip
                        g_settings = gr.JSON(label="Settings")

        # ---------------------------------------------------------------- events
        run_options = dict(concurrency_id=CONCURRENCY_ID, concurrency_limit=1, api_visibility="undocumented")
        # generate: note the time (queue=False, at once), then queue the run; cancel stops what was asked before it,
        # running or still waiting in the queue
        private = dict(queue=False, api_visibility="private")
        t_stamp, i_stamp = gr.State(), gr.State()
        t_event = t_go.click(app.submitted, None, t_stamp, **private).then(
            app.text_to_video, [t_stamp, model, t_prompt, t_negative, *t_controls.inputs()], [*t_out.all(), t_controls.seed],
            api_name="text_to_video", **run_options,
        )  # fmt: skip
        t_prompt.submit(lambda: None, None, None, js="() => document.querySelector('#t-generate').click()", **private)
        t_stop.click(app.cancel, None, t_out.status, **private)

        i_inputs = [i_stamp, model, i_mode, i_first, i_last, i_video1, i_video2, i_prompt, i_negative, *i_controls.inputs(),
                    i_interp, i_strength]  # fmt: skip
        i_event = i_go.click(app.submitted, None, i_stamp, **private).then(
            app.image_to_video, i_inputs, [*i_out.all(), i_controls.seed], api_name="image_to_video", **run_options
        )
        i_stop.click(app.cancel, None, i_out.status, **private)

        def mode_changed(mode: str) -> list[Any]:
            return [gr.update(visible=mode in ("image", "first_last")), gr.update(visible=mode == "first_last"),
                    gr.update(visible=mode == "videos"), gr.update(visible=mode == "videos"),
                    gr.update(visible=mode != "videos"), gr.update(visible=mode != "videos" and limits.takes_text)]  # fmt: skip

        i_mode.change(mode_changed, i_mode, [i_first, i_last, i_clips, i_between, i_controls.num_videos, i_negative], **private)

        g_shown = gr.State([])
        for trigger in (g_tab.select, g_refresh.click, t_event.then, i_event.then):
            trigger(app.gallery, None, [g_gallery, g_shown], **private)
        g_gallery.select(app.gallery_select, g_shown, [g_video, g_files, g_settings, g_command, g_caption], **private)

        tabs = [t_controls, i_controls]
        model.change(lambda name: app.model_changed(name, tabs=tabs), model,
                     [about, *t_controls.inputs(), *i_controls.inputs()], api_visibility="private")  # fmt: skip

        gr.api(app.api_generate, api_name="generate", concurrency_id=CONCURRENCY_ID, concurrency_limit=1)
        gr.api(app.api_animate, api_name="animate", concurrency_id=CONCURRENCY_ID, concurrency_limit=1)
        gr.api(app.api_interpolate, api_name="interpolate", concurrency_id=CONCURRENCY_ID, concurrency_limit=1)
    demo.queue(default_concurrency_limit=1)
    return demo


def launch(demo: gr.Blocks, studio: Studio, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> tuple[str, Optional[str]]:
    """Start the server without blocking; returns its local address and the public link (``share`` only).
    Call ``demo.block_thread()`` to wait, ``demo.close()`` to stop."""
    studio.output_dir.mkdir(parents=True, exist_ok=True)
    _, url, share_url = demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True, ssr_mode=False,
        allowed_paths=[str(studio.output_dir.resolve())], show_error=True, css=CSS, footer_links=["api"],
    )  # fmt: skip
    return url, share_url
