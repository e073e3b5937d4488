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
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np
from PIL import Image

from sca.app.anything import AnythingConfig, caption_everything
from sca.app.api import Captioner, EncodedImage, RegionCaption
from sca.app.overlay import draw_prompts, region_color
from sca.models.processor import check_region_prompts

__all__ = ["MODES", "DemoHandlers", "DemoSession", "build_demo", "launch"]

MODES = ("Foreground point", "Background point", "Box (click two corners)")
NO_IMAGE = "Upload an image first."


@dataclass
class DemoSession:
    """One browser session: the encoded image and the prompts clicked so far (original pixels)."""

    enc: EncodedImage | None = None
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    corner: list[float] | None = None  # first corner of a box being drawn

    def preview(self) -> np.ndarray:
        """The image with the pending prompts drawn on it."""
        img = draw_prompts(Image.fromarray(self.enc.rgb), self.boxes, self.points, self.labels)
        if self.corner is not None:
            img = draw_prompts(img, [], [self.corner], [1], colors=None)
        return np.asarray(img)

    def prompt_groups(self) -> list:
        w, h = self.enc.size
        groups = []  # the clicked region first: its number stays 1 as boxes are added
        if self.points:
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


class DemoHandlers:
    """The demo's event handlers; each returns the new values of its outputs (``gr.skip()``: unchanged)."""

    def __init__(self, captioner: Captioner, num_beams: int, max_new_tokens: int):
        self.cap, self.num_beams, self.max_new_tokens = captioner, num_beams, max_new_tokens

    def upload(self, image):
        if image is None:
            return DemoSession(), None, None, "", NO_IMAGE
        try:
            session = DemoSession(enc=self.cap.encode(image))
        except ValueError as err:
            return DemoSession(), None, None, "", f"Cannot use this image: {err}"
        w, h = session.enc.size
        return session, gr.skip(), None, "", f"Image {w}x{h} encoded. Click on it to add prompts."

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
        if session.points and 1 not in session.labels and not session.boxes:
            return session, preview, gr.skip(), gr.skip(), "Add a foreground point (background points only refine)."
        try:
            regions = []
            for group in session.prompt_groups():
                if group.points is not None and not (group.point_labels == 1).any():
                    continue
                regions += self.cap.caption_prompts(session.enc, group, task=task, num_beams=self.num_beams,
                                                    max_new_tokens=self.max_new_tokens)
        except ValueError as err:
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
            regions = caption_everything(self.cap, session.enc, config, task=task, num_beams=self.num_beams,
                                         max_new_tokens=self.max_new_tokens)
        except ValueError as err:
            return gr.skip(), gr.skip(), f"Error: {err}"
        annotated, listing = _results_view(session, regions, session.enc.rgb)
        return annotated, listing, f"Anything mode: {len(regions)} region(s) kept and captioned."


def _unit(v: float) -> float:
    return min(1.0, max(0.0, float(v)))


def build_demo(captioner: Captioner, *, title: str = "Segment and Caption Anything", num_beams: int = 3,
               max_new_tokens: int = 20, anything: AnythingConfig | None = None) -> gr.Blocks:
    """The demo app for ``captioner`` (not launched: see ``launch``). ``anything``: the initial
    values of the anything-mode sliders (default: 16 points per side, 24 regions, SAM's thresholds)."""
    a = anything or AnythingConfig(points_per_side=16, max_regions=24)
    h = DemoHandlers(captioner, num_beams, max_new_tokens)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nUpload an image, then click on it: points or two box corners. "
                    "Every region gets a mask and a caption.")
        session = gr.State(DemoSession())
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image (click to prompt)", type="numpy", image_mode="RGB",
                                 sources=["upload"], interactive=True, elem_id="sca-input")
                mode = gr.Radio(list(MODES), value=MODES[0], label="Click adds", elem_id="sca-mode")
                task = gr.Radio(["caption", "recognition"], value="caption", label="Task", elem_id="sca-task")
                with gr.Row():
                    clear = gr.Button("Clear prompts", elem_id="sca-clear")
                    everything = gr.Button("Caption everything", variant="primary", elem_id="sca-everything")
                with gr.Accordion("Anything mode settings", open=False):
                    per_side = gr.Slider(2, 64, value=a.points_per_side, step=1, label="Points per side")
                    iou = gr.Slider(0.0, 1.0, value=_unit(a.pred_iou_thresh), step=0.01,
                                    label="Predicted IoU threshold")
                    stab = gr.Slider(0.0, 1.0, value=_unit(a.stability_score_thresh), step=0.01,
                                     label="Stability score threshold")
                    nms = gr.Slider(0.0, 1.0, value=_unit(a.nms_iou), step=0.01, label="Box NMS IoU")
                    max_regions = gr.Slider(1, 128, value=a.max_regions or 128, step=1, label="Max regions")
            with gr.Column():
                status = gr.Markdown(NO_IMAGE, elem_id="sca-status")
                output = gr.AnnotatedImage(label="Masks and captions", elem_id="sca-output")
                captions = gr.HTML(elem_id="sca-captions")
        image.upload(h.upload, [image], [session, image, output, captions, status])
        image.clear(lambda: (DemoSession(), None, "", NO_IMAGE), None, [session, output, captions, status])
        image.select(h.click, [session, mode, task], [session, image, output, captions, status])
        clear.click(h.clear, [session], [session, image, output, captions, status])
        everything.click(h.everything, [session, task, per_side, iou, stab, nms, max_regions],
                         [output, captions, status])
    return demo


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True, quiet: bool = False):
    """Serve ``demo`` on ``host:port`` (no share link). block=False returns once serving (tests)."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return demo.queue().launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                               quiet=quiet, theme=theme, ssr_mode=False, footer_links=[])
