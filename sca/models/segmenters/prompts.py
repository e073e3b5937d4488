"""Region prompts and segmenter outputs, and the grouping that makes every region's result its own.

A batch of regions may mix prompt kinds: a box here, one foreground point there, three points with
a background click, a mask with or without a box. Tensors need one shape per kind, so ``Prompts``
carries absent prompts as placeholders: a region without a box has a NaN box row, a region without
points (or with fewer than the longest) has padding points labelled ``PAD_LABEL`` (-10), a region
without a mask has an all-NaN mask.

SAM's prompt encoder does not ignore placeholders: a -10 point becomes a zero token that every
other token of the mask decoder's two-way transformer attends to, so a 1-point region padded to 3
points gets another mask and other tokens than the same region alone. ``split_by_signature`` groups
regions by their true prompt signature (box present, number of real points, mask present) and gives
each group its prompts without any placeholder; the segmenter decodes every group on its own and
``merge_outputs`` puts the results back in region order. A region's result is thus the result of
that region alone, whatever it is batched with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

__all__ = ["PAD_LABEL", "Prompts", "RegionSignature", "SegmenterOutput", "merge_outputs", "region_signatures",
           "split_by_signature"]

PAD_LABEL = -10  # SAM's label of padding points: here "no point" (never given to SAM)


@dataclass
class Prompts:
    """Region prompts for a batch of images, in the segmenter's input frame (pixels of the resized,
    padded ``image_size`` square). Regions may differ in their prompt kinds (module docstring).

    boxes: [B, R, 4] float, x0 y0 x1 y1; a NaN row: that region has no box.
    points: [B, R, P, 2] float, x y.
    point_labels: [B, R, P] int: 1 foreground, 0 background, -1 SAM's "not a point",
        -10 padding (no point; a region whose labels are all -10 has no points).
    masks: [B, R, 1, 4h, 4w] float mask logits (256 x 256 for SAM), SAM's low-resolution mask prompt;
        all NaN: that region has no mask.
    """

    boxes: Tensor | None = None
    points: Tensor | None = None
    point_labels: Tensor | None = None
    masks: Tensor | None = None

    def __post_init__(self) -> None:
        present = [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]
        if not present or all(name == "point_labels" for name, _ in present):
            raise ValueError("Prompts needs at least one of boxes, points or masks; got none")
        if self.points is not None and self.point_labels is None:
            self.point_labels = torch.ones(self.points.shape[:-1], dtype=torch.long, device=self.points.device)
        expected_dims = {"boxes": 3, "points": 4, "point_labels": 3, "masks": 5}
        shape = None
        for name, value in present:
            if value.dim() != expected_dims[name]:
                raise ValueError(
                    f"Prompts.{name} must have {expected_dims[name]} dims {self._shape_doc(name)}; "
                    f"got shape {tuple(value.shape)}"
                )
            if shape is None:
                shape = tuple(value.shape[:2])
            elif tuple(value.shape[:2]) != shape:
                raise ValueError(
                    f"Prompts.{name} has batch x regions {tuple(value.shape[:2])}, others have {shape}"
                )
        if self.boxes is not None and self.boxes.shape[-1] != 4:
            raise ValueError(f"Prompts.boxes must end in 4 (x0 y0 x1 y1); got shape {tuple(self.boxes.shape)}")
        if self.points is not None:
            if self.points.shape[-1] != 2:
                raise ValueError(f"Prompts.points must end in 2 (x y); got shape {tuple(self.points.shape)}")
            if tuple(self.point_labels.shape) != tuple(self.points.shape[:-1]):
                raise ValueError(
                    f"Prompts.point_labels shape {tuple(self.point_labels.shape)} does not match points "
                    f"{tuple(self.points.shape)}"
                )
        if shape[1] == 0:
            raise ValueError("Prompts hold zero regions; give at least one box, point or mask per image")

    @staticmethod
    def _shape_doc(name: str) -> str:
        return {"boxes": "[B, R, 4]", "points": "[B, R, P, 2]", "point_labels": "[B, R, P]",
                "masks": "[B, R, 1, H, W]"}[name]

    @property
    def batch_size(self) -> int:
        return self._first().shape[0]

    @property
    def num_regions(self) -> int:
        return self._first().shape[1]

    def _first(self) -> Tensor:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                return value
        raise AssertionError("unreachable: validated in __post_init__")

    def map(self, fn) -> Prompts:
        """Apply ``fn`` to every present tensor (e.g. slicing regions, moving devices)."""
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def regions(self, start: int, stop: int) -> Prompts:
        """Regions ``start:stop`` of every image."""
        return self.map(lambda t: t[:, start:stop])

    def flatten(self) -> Prompts:
        """[B, R, ...] -> [B*R, 1, ...]: every region becomes its own single-region batch item."""
        return self.map(lambda t: t.reshape(t.shape[0] * t.shape[1], 1, *t.shape[2:]))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Prompts:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() and dtype is not None else None)

        return self.map(move)

    def signature(self) -> tuple:
        """The batch's prompt tensors: which kinds are present and the padded number of points.
        Per-region signatures (what decides a region's result): ``region_signatures``."""
        return (
            self.boxes is not None,
            None if self.points is None else self.points.shape[2],
            self.masks is not None,
        )


@dataclass
class SegmenterOutput:
    """What a segmenter gives for the regions of a batch of images.

    masks: [B, R, M, 4h, 4w] low-resolution mask logits (M = 3 with multimask output).
    iou_scores: [B, R, M] predicted mask IoU.
    tokens: [B, R, T, C] output tokens of the mask decoder's two-way transformer for
        [iou, mask x (M+1), prompt tokens] (T = 1 + 4 + 2 = 7 for a box prompt with SAM).
    image_tokens: [B, R, h*w, C] that transformer's updated image tokens, per region.
    token_mask: [B, R, T] bool, True for a region's own tokens, when regions of different prompt
        kinds have different token counts (each region's tokens come first, zeros after); None when
        every region has all T.
    mask_grid: [B, R, G*G] the chosen mask in the region's frame (``SCAModel.region_mask_grid``),
        when a caller computed it already (the segment cache); None otherwise.
    """

    masks: Tensor
    iou_scores: Tensor
    tokens: Tensor
    image_tokens: Tensor
    token_mask: Tensor | None = None
    mask_grid: Tensor | None = None

    def reshape(self, batch: int, regions: int) -> SegmenterOutput:
        """[N, 1, ...] -> [batch, regions, ...] (N = batch * regions)."""
        def r(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.reshape(batch, regions, *t.shape[2:])

        return SegmenterOutput(r(self.masks), r(self.iou_scores), r(self.tokens), r(self.image_tokens),
                               r(self.token_mask), r(self.mask_grid))


# ---------------------------------------------------------------------------------------------------
# Grouping by signature
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionSignature:
    """What SAM's prompt encoder sees of one region: a box or not, its real points, a mask or not."""

    has_box: bool
    num_points: int
    has_mask: bool


def _present_rows(t: Tensor, name: str) -> Tensor:
    """[N, 1, ...] -> [N] bool: rows without NaN are present, all-NaN rows absent, others an error."""
    nan = torch.isnan(t.reshape(t.shape[0], -1)) if t.is_floating_point() else torch.zeros(t.shape[0], 1, dtype=torch.bool)
    absent, partial = nan.all(1), nan.any(1)
    bad = torch.nonzero(partial & ~absent).flatten()
    if len(bad):
        raise ValueError(f"Prompts.{name} of region {int(bad[0])} holds some NaN values: a region's {name} "
                         f"is either given (no NaN) or absent (all NaN)")
    return ~absent


def region_signatures(flat: Prompts) -> list[RegionSignature]:
    """Flat prompts [N, 1, ...] -> every region's signature. Raises ValueError for a region with no
    prompt at all, naming it."""
    if flat.num_regions != 1:
        raise ValueError(f"region_signatures needs flat prompts [N, 1, ...], got {flat.num_regions} regions per item")
    n = flat.batch_size
    has_box = _present_rows(flat.boxes, "boxes") if flat.boxes is not None else torch.zeros(n, dtype=torch.bool)
    has_mask = _present_rows(flat.masks, "masks") if flat.masks is not None else torch.zeros(n, dtype=torch.bool)
    points = ((flat.point_labels[:, 0] != PAD_LABEL).sum(1) if flat.points is not None
              else torch.zeros(n, dtype=torch.long))
    out = [RegionSignature(bool(b), int(p), bool(m))
           for b, p, m in zip(has_box.tolist(), points.tolist(), has_mask.tolist(), strict=True)]
    for i, s in enumerate(out):
        if not (s.has_box or s.num_points or s.has_mask):
            raise ValueError(f"region {i} has no prompt: its box is NaN (or absent), all its point labels are "
                             f"{PAD_LABEL} (padding) and its mask is NaN (or absent); give a box, a point or a mask")
    return out


def _real_points(points: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """points [n, 1, P, 2], labels [n, 1, P] with exactly k real (non-padding) points per row ->
    [n, 1, k, 2], [n, 1, k]: the real points in their given order."""
    order = torch.sort((labels == PAD_LABEL).to(torch.int8), dim=-1, stable=True).indices[..., :k]
    return points.gather(2, order[..., None].expand(-1, -1, -1, 2)), labels.gather(2, order)


def split_by_signature(flat: Prompts) -> list[tuple[Tensor, Prompts]]:
    """Flat prompts [N, 1, ...] -> [(rows [n_g] long, prompts [n_g, 1, ...])], one item per distinct
    region signature (in order of first appearance), each holding exactly its regions' own prompts:
    no NaN box or mask, no padding point (the points keep their order)."""
    signatures = region_signatures(flat)
    device = flat._first().device
    groups: dict[RegionSignature, list[int]] = {}
    for i, s in enumerate(signatures):
        groups.setdefault(s, []).append(i)
    out = []
    for s, rows_list in groups.items():
        rows = torch.tensor(rows_list, dtype=torch.long, device=device)

        def pick(t: Tensor, rows: Tensor = rows) -> Tensor:
            return t.index_select(0, rows)

        boxes = pick(flat.boxes) if s.has_box else None
        masks = pick(flat.masks) if s.has_mask else None
        points = labels = None
        if s.num_points:
            points, labels = pick(flat.points), pick(flat.point_labels)
            if points.shape[2] != s.num_points:
                points, labels = _real_points(points, labels, s.num_points)
        out.append((rows, Prompts(boxes=boxes, points=points, point_labels=labels, masks=masks)))
    return out


def merge_outputs(parts: list[tuple[Tensor, SegmenterOutput]], n: int) -> SegmenterOutput:
    """Outputs of groups [(rows [n_g], output [n_g, 1, ...])] -> one output [n, 1, ...] in region
    order. Token counts may differ between groups: tokens are then padded with zeros to the longest
    and ``token_mask`` marks each region's own."""
    if len(parts) == 1:
        rows, out = parts[0]
        if torch.equal(rows, torch.arange(n, device=rows.device)):
            return out
    order = torch.cat([rows for rows, _ in parts])
    if order.numel() != n:
        raise ValueError(f"merge_outputs got {order.numel()} regions for {n}")
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=order.device)

    def cat(ts: list[Tensor]) -> Tensor:
        return torch.cat(ts).index_select(0, inverse)

    counts = [out.tokens.shape[2] for _, out in parts]
    t_max = max(counts)
    token_mask = None
    tokens = [out.tokens for _, out in parts]
    if any(c != t_max for c in counts) or any(out.token_mask is not None for _, out in parts):
        tokens = [torch.nn.functional.pad(t, (0, 0, 0, t_max - t.shape[2])) for t in tokens]
        masks = []
        for (_, out), c in zip(parts, counts, strict=True):
            own = out.token_mask if out.token_mask is not None else torch.ones(
                out.tokens.shape[:3], dtype=torch.bool, device=out.tokens.device)
            masks.append(torch.nn.functional.pad(own, (0, t_max - c), value=False))
        token_mask = cat(masks)
    return SegmenterOutput(
        masks=cat([out.masks for _, out in parts]),
        iou_scores=cat([out.iou_scores for _, out in parts]),
        tokens=cat(tokens),
        image_tokens=cat([out.image_tokens for _, out in parts]),
        token_mask=token_mask,
    )
