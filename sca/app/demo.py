"""The web demo (gradio): upload an image, click points or two box corners, read the captions.

    sca demo --checkpoint runs/vg                  # http://127.0.0.1:7860, loopback only
    python -c "from sca.app.api import Captioner; from sca.app.demo import build_demo, launch; \
               launch(build_demo(Captioner.from_pretrained('runs/vg')))"

The page: the image (upload, then click on it); a click mode (foreground point, background point,
box corner); the masks with their captions as labels; a numbered caption list; one button for
anything mode. The image is encoded once per upload (kept in the session); every completed prompt
re-captions the session's regions: all clicked points together form one region (SAM's interactive
convention), every box is a region of its own. Nothing is fetched from the internet: analytics are
off and the theme uses system fonts.

Uploads reach the handler as the uploaded file (gradio does not decode it) and are decoded by the
API's own image path (``Captioner.encode(path)``: ``sca.data.images``, EXIF orientation, 16-bit and
transparency handled, the image-size limit), so the demo sees exactly what ``Captioner`` sees for the
same file, and the page then shows that decoded image. Every bad input (not an image, truncated,
empty, too large) is a message in the status line; no handler lets an error escape, so one bad
upload never stops the page for others. Events one at a time (gradio's queue), cached files removed
after an hour. API clients see two endpoints, ``/upload`` and ``/everything``; the click and clear
handlers are private.
"""

from __future__ import annotations

import html
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
from PIL import Image

from sca.app.anything import AnythingConfig, AnythingWarning, caption_everything
from sca.app.api import Captioner, EncodedImage, RegionCaption
from sca.app.overlay import draw_prompts, region_color
from sca.data.images import ImageError
from sca.models.processor import check_region_prompts

__all__ = ["MODES", "SLIDERS", "DemoHandlers", "DemoSession", "build_demo", "initial_anything", "launch",
           "upload_message"]

MODES = ("Foreground point", "Background point", "Box (click two corners)")
NO_IMAGE = "Upload an image first."
ACCEPTED = "upload an image file (PNG, JPEG, WebP, TIFF, BMP, GIF, ...)"
logger = logging.getLogger(__name__)


@dataclass
class DemoSession:
    """One browser session: the encoded image and the prompts clicked so far (original pixels)."""

    enc: EncodedImage | None = None
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    corner: list[float] | None = None  # first corner of a box being drawn

    @property
    def clicked_region(self) -> bool:
        """Whether the clicked points make a region (they need a foreground point): it is region 1."""
        return bool(self.points) and 1 in self.labels

    def box_colors(self) -> list[tuple[int, int, int]]:
        """Each box's region colour: boxes come after the clicked region, when there is one."""
        first = 1 if self.clicked_region else 0
        return [region_color(first + k) for k in range(len(self.boxes))]

    def preview(self) -> np.ndarray:
        """The image with the pending prompts drawn on it, every box in its region's colour."""
        img = draw_prompts(Image.fromarray(self.enc.rgb), self.boxes, self.points, self.labels,
                           colors=self.box_colors())
        if self.corner is not None:
            img = draw_prompts(img, [], [self.corner], [1], colors=None)
        return np.asarray(img)

    def prompt_groups(self) -> list:
        w, h = self.enc.size
        groups = []  # the clicked region first: its number stays 1 as boxes are added
        if self.clicked_region:
            groups.append(check_region_prompts(w, h, points=[self.points], point_labels=[self.labels]))
        if self.boxes:
            groups.append(check_region_prompts(w, h, boxes=self.boxes))
        return groups


def _hex(rgb) -> str:
    r, g, b = rgb
    return f"#{r:02x}{g:02x}{b:02x}"


def _prompt(r: RegionCaption) -> dict:
    return {"box": r.box, "points": r.points, "point_labels": r.point_labels}


def _describe(r: RegionCaption) -> str:
    parts = []
    if r.box is not None:
        parts.append("box [" + ", ".join(f"{v:.0f}" for v in r.box) + "]")
    for (x, y), label in zip(r.points or [], r.point_labels or [], strict=True):
        parts.append(f"({x:.0f}, {y:.0f}){'+' if label == 1 else '-'}")
    return " ".join(parts)


def _results_view(session: DemoSession, regions: list[RegionCaption], base: np.ndarray):
    """-> (AnnotatedImage update, caption list HTML)."""
    labels = [f"{k + 1}: {r.caption}" for k, r in enumerate(regions)]
    annotations = [(r.mask.astype(np.float32) * 0.6, lab) for r, lab in zip(regions, labels, strict=True)]
    colors = {lab: _hex(region_color(k)) for k, lab in enumerate(labels)}
    items = "".join(
        f'<li class="sca-region" data-region="{k + 1}" data-prompt="{html.escape(json.dumps(_prompt(r)))}">'
        f'<span style="display:inline-block;width:0.9em;height:0.9em;background:{_hex(region_color(k))}"></span> '
        f'<span class="sca-caption">{html.escape(r.caption) or "(empty caption)"}</span> '
        f'<small>IoU {r.iou_score:.3f} · {r.area} px · {html.escape(_describe(r))}</small></li>'
        for k, r in enumerate(regions))
    listing = f'<ol id="sca-caption-list">{items}</ol>' if regions else "<p>No regions.</p>"
    return gr.AnnotatedImage(value=(base, annotations), color_map=colors), listing


def _upload_source(image) -> tuple[object, str | None]:
    """What an upload event gives (gradio's file payload, a path, or an in-memory image for Python
    callers) -> (what ``Captioner.encode`` takes, the file's name as the user knows it)."""
    if isinstance(image, dict):  # gradio's FileData: the uploaded file, not decoded
        path = image.get("path")
        return path, image.get("orig_name") or (Path(path).name if path else None)
    if isinstance(image, (str, os.PathLike)):
        return str(image), Path(image).name
    return image, None


def upload_message(err: Exception, path, name: str | None) -> str:
    """The status line for an image that cannot be used: what is wrong with it and what is accepted,
    naming the file as the user uploaded it (never the server's temporary path)."""
    what = repr(name) if name else "this image"
    if isinstance(err, ImageError):
        reason = err.reason.replace(err.path, name or "the file") if err.path else err.reason
        if err.kind == "image_missing":
            return f"Cannot use {what}: the uploaded file is gone ({reason}); upload it again."
        return f"Cannot use {what}: it is not a readable image ({reason}); {ACCEPTED}."
    text = str(err)
    if path:
        text = text.replace(str(path), name or "the file")
    if isinstance(err, MemoryError):
        return f"Cannot use {what}: not enough memory for an image this large; upload a smaller image."
    if isinstance(err, ValueError):
        return f"Cannot use {what}: {text}"
    return f"Cannot use {what}: unexpected error ({type(err).__name__}: {text}); {ACCEPTED}."


def _empty_file(path) -> bool:
    try:
        return path is not None and os.path.getsize(path) == 0
    except OSError:
        return False


class DemoHandlers:
    """The demo's event handlers; each returns the new values of its outputs (``gr.skip()``: unchanged).
    None raises: every error becomes the status line."""

    def __init__(self, captioner: Captioner, num_beams: int, max_new_tokens: int):
        self.cap, self.num_beams, self.max_new_tokens = captioner, num_beams, max_new_tokens

    def upload(self, image):
        """-> (session, the image as decoded (shown for clicking), output, caption list, status)."""
        source, name = _upload_source(image)
        if source is None:
            return DemoSession(), None, None, "", NO_IMAGE
        path = source if isinstance(source, str) else None
        try:
            if _empty_file(path):
                raise ImageError(path, "image_corrupt", "the file is empty (0 bytes)")
            session = DemoSession(enc=self.cap.encode(source))
        except Exception as err:  # any failure is this upload's message, never the server's
            if not isinstance(err, (ImageError, ValueError, MemoryError)):
                logger.exception("demo: upload of %s failed", name)
            return DemoSession(), None, None, "", upload_message(err, path, name)
        w, h = session.enc.size
        return session, session.enc.rgb, None, "", f"Image {w}x{h} encoded. Click on it to add prompts."

    def click(self, session: DemoSession, mode: str, task: str, evt: gr.SelectData):
        if session is None or session.enc is None:
            return session, gr.skip(), gr.skip(), gr.skip(), NO_IMAGE
        x, y = (float(v) for v in evt.index[:2])
        if mode == MODES[2]:
            if session.corner is None:
                session.corner = [x, y]
                return session, session.preview(), gr.skip(), gr.skip(), "Box: now click the opposite corner."
            (x0, y0), session.corner = session.corner, None
            box = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                return session, session.preview(), gr.skip(), gr.skip(), "Box is empty: click two different corners."
            session.boxes.append(box)
        else:
            session.points.append([x, y])
            session.labels.append(1 if mode == MODES[0] else 0)
        return self._caption(session, task)

    def _caption(self, session: DemoSession, task: str):
        preview = session.preview()
        if session.points and not session.clicked_region and not session.boxes:
            return session, preview, gr.skip(), gr.skip(), "Add a foreground point (background points only refine)."
        try:
            regions = []
            for group in session.prompt_groups():
                regions += self.cap.caption_prompts(session.enc, group, task=task, num_beams=self.num_beams,
                                                    max_new_tokens=self.max_new_tokens)
        except Exception as err:
            if not isinstance(err, ValueError):
                logger.exception("demo: captioning failed")
            return session, preview, gr.skip(), gr.skip(), f"Error: {err}"
        annotated, listing = _results_view(session, regions, preview)
        return session, preview, annotated, listing, f"{len(regions)} region(s) captioned."

    def clear(self, session: DemoSession):
        if session is None or session.enc is None:
            return DemoSession(), gr.skip(), None, "", NO_IMAGE
        fresh = DemoSession(enc=session.enc)
        return fresh, fresh.enc.rgb, None, "", "Prompts cleared."

    def everything(self, session: DemoSession, task: str, per_side: float, iou: float, stability: float,
                   nms: float, max_regions: float):
        if session is None or session.enc is None:
            return gr.skip(), gr.skip(), NO_IMAGE
        try:
            config = AnythingConfig(points_per_side=int(per_side), pred_iou_thresh=float(iou),
                                    stability_score_thresh=float(stability), nms_iou=float(nms),
                                    max_regions=int(max_regions))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=AnythingWarning)  # an empty result: shown below
                regions = caption_everything(self.cap, session.enc, config, task=task, num_beams=self.num_beams,
                                             max_new_tokens=self.max_new_tokens)
        except Exception as err:
            if not isinstance(err, ValueError):
                logger.exception("demo: anything mode failed")
            return gr.skip(), gr.skip(), f"Error: {err}"
        annotated, listing = _results_view(session, regions, session.enc.rgb)
        if not regions:  # anything mode's account of its filters
            return annotated, listing, f"Anything mode: 0 region(s) kept. {regions.report.summary()}"
        return annotated, listing, f"Anything mode: {len(regions)} region(s) kept and captioned."


SLIDERS = {"points_per_side": (1, 64), "pred_iou_thresh": (-1.0, 1.0), "stability_score_thresh": (0.0, 1.0),
           "nms_iou": (0.0, 1.0), "max_regions": (1, 128)}  # the anything-mode sliders' ranges


def initial_anything(captioner: Captioner, anything: AnythingConfig | None = None) -> AnythingConfig:
    """The sliders' initial values: ``anything``'s (default 16 points per side, 24 regions), with the
    thresholds it leaves unset taken from the checkpoint when it carries calibrated ones, else SAM's;
    each must lie in its slider's range (``SLIDERS``)."""
    a = (anything or AnythingConfig(points_per_side=16, max_regions=24)).resolve(captioner.model.config.anything)
    for name, (low, high) in SLIDERS.items():
        value = getattr(a, name)
        if value is not None and not low <= value <= high:
            raise ValueError(f"the demo's {name} must lie in [{low}, {high}] (its slider), got {value!r}")
    return a


def build_demo(captioner: Captioner, *, title: str = "Segment and Caption Anything", num_beams: int = 3,
               max_new_tokens: int = 20, anything: AnythingConfig | None = None) -> gr.Blocks:
    """The demo app for ``captioner`` (not launched: see ``launch``). ``anything``: the initial
    values of the anything-mode sliders (``initial_anything``)."""
    a = initial_anything(captioner, anything)
    h = DemoHandlers(captioner, num_beams, max_new_tokens)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {title}\nUpload an image, then click on it: points or two box corners. "
                    "Every region gets a mask and a caption.")
        session = gr.State(DemoSession())
        with gr.Row():
            with gr.Column():
                # The upload reaches the handler as a file (preprocess=False below): sca decodes it.
                image = gr.Image(label="Image (click to prompt)", type="filepath", image_mode=None, format="png",
                                 sources=["upload"], interactive=True, elem_id="sca-input")
                mode = gr.Radio(list(MODES), value=MODES[0], label="Click adds", elem_id="sca-mode")
                task = gr.Radio(["caption", "recognition"], value="caption", label="Task", elem_id="sca-task")
                with gr.Row():
                    clear = gr.Button("Clear prompts", elem_id="sca-clear")
                    everything = gr.Button("Caption everything", variant="primary", elem_id="sca-everything")
                with gr.Accordion("Anything mode settings", open=False):
                    per_side = gr.Slider(*SLIDERS["points_per_side"], value=int(a.points_per_side), step=1,
                                         label="Points per side")
                    iou = gr.Slider(*SLIDERS["pred_iou_thresh"], value=float(a.pred_iou_thresh), step=0.01,
                                    label="Predicted IoU threshold")
                    stab = gr.Slider(*SLIDERS["stability_score_thresh"], value=float(a.stability_score_thresh),
                                     step=0.01, label="Stability score threshold")
                    nms = gr.Slider(*SLIDERS["nms_iou"], value=float(a.nms_iou), step=0.01, label="Box NMS IoU")
                    max_regions = gr.Slider(*SLIDERS["max_regions"], value=a.max_regions or SLIDERS["max_regions"][1], step=1,
                                            label="Max regions")
            with gr.Column():
                status = gr.Markdown(NO_IMAGE, elem_id="sca-status")
                output = gr.AnnotatedImage(label="Masks and captions", elem_id="sca-output")
                captions = gr.HTML(elem_id="sca-captions")
        image.upload(h.upload, [image], [session, image, output, captions, status], preprocess=False,
                     api_name="upload")
        image.clear(lambda: (DemoSession(), None, "", NO_IMAGE), None, [session, output, captions, status],
                    api_visibility="private")
        image.select(h.click, [session, mode, task], [session, image, output, captions, status],
                     api_visibility="private")
        clear.click(h.clear, [session], [session, image, output, captions, status], api_visibility="private")
        everything.click(h.everything, [session, task, per_side, iou, stab, nms, max_regions],
                         [output, captions, status], api_name="everything")
    return demo


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True, quiet: bool = False):
    """Serve ``demo`` on ``host:port`` (no share link). block=False returns once serving (tests)."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return demo.queue().launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                               quiet=quiet, theme=theme, ssr_mode=False, footer_links=[])
