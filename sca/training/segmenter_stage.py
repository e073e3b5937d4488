"""The segmenter stage of the embedded default: train a tiny SAM for promptable segmentation.

No SAM weights can be had offline, so the embedded default first trains its whole tiny SAM (image
encoder, prompt encoder, mask decoder) on the synthetic masks; SCAModel then freezes it, as the
paper freezes SAM (paper.md §1). Facts from the SAM paper (Kirillov et al. 2023, §3 and appendix A):

- mask loss = focal loss + dice loss in a 20:1 ratio, back-propagated only through the best of the
  multimask outputs (the minimum loss over the 3 masks), since one prompt may be ambiguous;
- the IoU head is trained with a mean-squared error between each predicted IoU and the actual IoU
  of that mask with the GT mask, weighted 1.0;
- prompts: the GT box with noise, or points inside the mask (``sca.training.segmenter_prompts``).

Deviation (embedded default only): SAM's image encoder starts from an MAE-pretrained ViT; a tiny SAM
trained on masks alone keeps little of what regions look like, which SCA's captions need. The
embedded default adds a pixel reconstruction loss on the image embedding (``PixelDecoder``,
``EMBEDDED_SEGMENTER_LOSS``) as a stand-in for that pretraining.

    run_segmenter_stage(segmenter={"name": "tiny-sam", "image_size": 128}, data={...DataConfig...},
                        train={...TrainConfig...}, output_dir="runs/segmenter")

writes ``output_dir/model`` (a transformers SamModel folder: ``IMAGE_ENCODERS.build("tiny-sam",
weights=folder)`` loads it), ``output_dir/metrics.json`` (mask IoU on the val split beside the
box-as-mask baseline), ``output_dir/checkpoints`` and ``output_dir/live`` (the Trainer's).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sca.models.segmenters.base import Prompts, SamSegmenter, SegmenterOutput
from sca.training.segmenter_heads import PixelDecoder, TokenMaskDecoder, box_crops
from sca.training.segmenter_prompts import box_as_mask, interior_points, noisy_boxes, sample_points
from sca.training.trainer import LossParts, TrainResult

__all__ = ["EMBEDDED_SEGMENTER", "EMBEDDED_SEGMENTER_LOSS", "EMBEDDED_SEGMENTER_TRAIN", "PixelDecoder",
           "SegmenterLoss", "TokenMaskDecoder", "TrainableSegmenter", "evaluate_segmenter", "mask_losses", "run_segmenter_stage"]

# The embedded default's tiny SAM and its schedule (measured on 2 CPU cores; see the stage's report).
EMBEDDED_SEGMENTER: dict[str, Any] = {"name": "tiny-sam", "image_size": 128, "patch_size": 8, "hidden_size": 64,
                                      "vision_hidden_size": 64, "vision_layers": 2, "init": "sam"}
# SAM's losses + the pixel reconstruction that stands in for its encoder's MAE pretraining (PixelDecoder).
EMBEDDED_SEGMENTER_LOSS: dict[str, Any] = {"reconstruction_weight": 1.0}
EMBEDDED_SEGMENTER_TRAIN: dict[str, Any] = {"max_steps": 1000, "lr": 2e-3, "warmup_steps": 30,
                                            "images_per_step": 8, "regions_per_image": 6, "weight_decay": 1e-4,
                                            "num_workers": 1, "log_every": 20, "save_every": 100,
                                            "seed": 0}


# ---------------------------------------------------------------------------------------------------
# The model the Trainer sees
# ---------------------------------------------------------------------------------------------------
class TrainableSegmenter(nn.Module):
    """A ``SamSegmenter`` with every parameter trainable; ``save_pretrained`` writes its SamModel.

    ``forward(pixel_values [B, 3, S, S], groups)`` encodes the images once and decodes each group
    ``(image_index [N], Prompts [N, 1, ...])`` (regions of one prompt kind) against the embedding of
    its image; returns (one ``SegmenterOutput`` per group (masks [N, 1, M, 4h, 4w], iou [N, 1, M]),
    the pixels reconstructed from the image embedding [B, 3, S, S] or None).
    Going through ``forward`` keeps DDP's gradient sync in the loop.

    reconstruction: add a pixel decoder on the image embedding (see ``PixelDecoder``); it trains
    with the segmenter and is not saved: SCA sees only the SAM.
    token_masks: add a decoder of each region's box-normalised mask from its output tokens
    (``TokenMaskDecoder``; also not saved).
    """

    def __init__(self, segmenter: SamSegmenter, *, reconstruction: bool = False, token_masks: bool = False):
        super().__init__()
        if not isinstance(segmenter, SamSegmenter):
            raise TypeError(f"the segmenter stage trains a SamSegmenter, got {type(segmenter).__name__}")
        self.segmenter = segmenter
        for p in self.segmenter.parameters():
            p.requires_grad_(True)
        self.pixel_decoder = None
        if reconstruction:
            _, channels, grid, _ = segmenter.image_positional_embeddings().shape
            self.pixel_decoder = PixelDecoder(int(channels), int(grid), segmenter.image_size)
        self.token_mask_decoder = None
        if token_masks:
            channels = int(segmenter.image_positional_embeddings().shape[1])
            self.token_mask_decoder = TokenMaskDecoder(channels)

    def forward(self, pixel_values: Tensor, groups: list[tuple[Tensor, Prompts]],
                multimask_output: bool = True) -> tuple[list[SegmenterOutput], Tensor | None]:
        embeddings = self.segmenter.encode(pixel_values)["image_embeddings"]  # [B, C, h, w]
        outputs = [self.segmenter.decode({"image_embeddings": embeddings[index]}, prompts, multimask_output)
                   for index, prompts in groups]
        pixels = self.pixel_decoder(embeddings) if self.pixel_decoder is not None else None
        return outputs, pixels

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.segmenter.sam.save_pretrained(str(folder))


# ---------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------
def _mask_iou(pred: Tensor, target: Tensor) -> Tensor:
    """[..., P] bool predictions and targets -> [...] IoU (an empty union counts as 1)."""
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mask_losses(logits: Tensor, target: Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> dict[str, Tensor]:
    """Per-mask SAM losses. logits: [N, M, S, S] mask logits; target: [N, S, S] bool GT masks.

    Returns [N, M] tensors: ``focal`` (sigmoid focal loss, Lin et al. 2017, mean over pixels),
    ``dice`` (1 - soft Dice with +1 smoothing) and ``iou`` (the actual IoU of the mask thresholded
    at logit 0, no gradient)."""
    t = target[:, None].expand_as(logits).flatten(2)  # [N, M, S*S] bool
    x = logits.flatten(2).float()
    # With z = x for foreground and -x for background: 1 - p_t = sigmoid(-z) and the cross-entropy
    # -log p_t = softplus(-z) (fewer passes over the pixels than the textbook form).
    z = torch.where(t, x, -x)
    ce = F.softplus(-z)
    weight = torch.where(t, alpha, 1 - alpha) if alpha >= 0 else 1.0
    focal = (weight * torch.sigmoid(-z) ** gamma * ce).mean(-1)
    p = torch.sigmoid(x)
    tf = t.float()
    dice = 1 - (2 * (p * tf).sum(-1) + 1) / (p.sum(-1) + tf.sum(-1) + 1)
    with torch.no_grad():
        iou = _mask_iou(x > 0, t)
    return {"focal": focal, "dice": dice, "iou": iou}


class SegmenterLoss:
    """``(model, batch) -> LossParts`` for ``TrainableSegmenter`` on a RegionBatch with masks.

    Every real region with a non-empty mask gets a prompt: the noisy GT box with probability
    ``box_prob``, else points: with ``single_point_prob`` one positive point (SAM's first training
    iteration: 'a foreground point or a bounding box', with equal probability), otherwise
    1..``max_points`` positive points plus a negative with ``negative_prob`` (the kinds of prompt
    SAM's later, interactive iterations add). The point count and the negative are drawn once per
    micro-batch for all its point-prompted regions.
    Loss per region = min over the M masks of (focal_weight x focal + dice_weight x dice)
    + iou_weight x mean over the M masks of (predicted IoU - actual IoU)^2 (SAM's 20 : 1 : 1).
    Regions without a mask (``has_mask`` False) or with an empty one are skipped and counted.
    reconstruction_weight: with a ``TrainableSegmenter(reconstruction=True)``, + this weight x the
    mean squared error of its reconstructed (normalised) pixels, per region of the micro-batch.
    token_mask_weight: with a ``TrainableSegmenter(token_masks=True)``, + this weight x the binary
    cross-entropy of each region's box-normalised mask decoded from its output tokens.
    """

    def __init__(self, *, reconstruction_weight: float = 0.0, token_mask_weight: float = 0.0, box_prob: float = 0.5,
                 box_noise: float = 0.1,
                 single_point_prob: float = 0.5,
                 max_points: int = 3, negative_prob: float = 0.5, focal_weight: float = 20.0, dice_weight: float = 1.0,
                 iou_weight: float = 1.0, focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        for name, value in (("box_prob", box_prob), ("single_point_prob", single_point_prob),
                            ("negative_prob", negative_prob)):
            if not 0 <= value <= 1:
                raise ValueError(f"SegmenterLoss {name} is a probability in [0, 1], got {value!r}")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points!r}")
        self.box_prob, self.box_noise, self.max_points = box_prob, box_noise, max_points
        self.single_point_prob, self.negative_prob = single_point_prob, negative_prob
        self.focal_weight, self.dice_weight, self.iou_weight = focal_weight, dice_weight, iou_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        if reconstruction_weight < 0:
            raise ValueError(f"reconstruction_weight must be >= 0, got {reconstruction_weight!r}")
        self.reconstruction_weight = reconstruction_weight
        if token_mask_weight < 0:
            raise ValueError(f"token_mask_weight must be >= 0, got {token_mask_weight!r}")
        self.token_mask_weight = token_mask_weight

    def prompt_groups(self, boxes: Tensor, masks: Tensor, size: int) -> list[tuple[Tensor, Prompts]]:
        """Draw one prompt per region. boxes [N, 4], masks [N, S, S] -> [(rows [n], Prompts [n, 1, ...])].

        Each region takes the box or points; the point regions of one call share the number of
        positives and whether a negative joins, so there are at most two groups (two decoder calls:
        on CPU the decoder's cost is mostly per call) and no padded points."""
        n = boxes.shape[0]
        use_box = torch.rand(n) < self.box_prob
        if torch.rand(()) < self.single_point_prob:
            positives, negative = 1, False
        else:
            positives = int(torch.randint(1, self.max_points + 1, ()))
            negative = bool(torch.rand(()) < self.negative_prob)
        groups = []
        rows = use_box.nonzero(as_tuple=True)[0]
        if len(rows):
            b = noisy_boxes(boxes[rows], size, noise=self.box_noise)
            groups.append((rows, Prompts(boxes=b[:, None])))
        rows = (~use_box).nonzero(as_tuple=True)[0]
        if len(rows):
            pts, labels = sample_points(masks[rows], boxes[rows], positives, negative)
            groups.append((rows, Prompts(points=pts[:, None], point_labels=labels[:, None])))
        return groups

    def region_loss(self, out: SegmenterOutput, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """out: masks [n, 1, M, h', w'], iou_scores [n, 1, M]; target [n, S, S] bool -> loss [n] + parts."""
        size = target.shape[-1]
        logits = F.interpolate(out.masks[:, 0], size=(size, size), mode="bilinear", align_corners=False)
        parts = mask_losses(logits, target, alpha=self.focal_alpha, gamma=self.focal_gamma)
        per_mask = self.focal_weight * parts["focal"] + self.dice_weight * parts["dice"]  # [n, M]
        best = per_mask.argmin(1, keepdim=True)
        iou_mse = ((out.iou_scores[:, 0].float() - parts["iou"]) ** 2).mean(1)
        loss = per_mask.gather(1, best)[:, 0] + self.iou_weight * iou_mse
        chosen = {k: parts[k].gather(1, best)[:, 0] for k in ("focal", "dice", "iou")}
        return loss, {**chosen, "iou_mse": iou_mse}

    def __call__(self, model, batch) -> LossParts:
        core = getattr(model, "module", model)  # DDP wraps the model
        if len(batch) == 0:  # every image of the micro-batch was bad (reported in batch.report)
            return _zero_loss(core, {"regions": 0.0, "skipped_no_mask": 0.0, "skipped_empty_mask": 0.0})
        if batch.masks is None:
            raise ValueError("the segmenter stage needs masks: build the dataset with load_masks=True")
        real = batch.region_mask & batch.has_mask
        usable = real & batch.masks.flatten(2).any(-1)  # a mask cropped away by augmentation is empty
        stats = {"regions": float(usable.sum()), "skipped_no_mask": float((batch.region_mask & ~real).sum()),
                 "skipped_empty_mask": float((real & ~usable).sum())}
        if not usable.any():
            return _zero_loss(core, stats)
        device = next(core.parameters()).device
        image_index = usable.nonzero(as_tuple=True)[0]
        boxes, masks = batch.boxes[usable], batch.masks[usable]  # [N, 4], [N, S, S]
        size = masks.shape[-1]
        groups = self.prompt_groups(boxes, masks, size)
        inputs = [(image_index[rows].to(device), prompts.to(device)) for rows, prompts in groups]
        pixel_values = batch.pixel_values.to(device)
        outputs, pixels = model(pixel_values, inputs)
        total, sums = 0.0, {}
        decoder = getattr(core, "token_mask_decoder", None)
        if self.token_mask_weight > 0 and decoder is None:
            raise ValueError("SegmenterLoss(token_mask_weight > 0) needs TrainableSegmenter(token_masks=True)")
        for (rows, _), out in zip(groups, outputs, strict=True):
            loss, parts = self.region_loss(out, masks[rows].to(device))
            if self.token_mask_weight > 0:
                target = box_crops(masks[rows], boxes[rows], decoder.grid).to(device)
                bce = F.binary_cross_entropy_with_logits(decoder(out.tokens[:, 0]).float(), target,
                                                         reduction="none").mean((1, 2))
                loss = loss + self.token_mask_weight * bce
                parts = {**parts, "token_mask_bce": bce.detach()}
            total = total + loss.sum()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach().sum())
        n = int(usable.sum())
        stats.update({k: v / n for k, v in sums.items()})
        if self.reconstruction_weight > 0 and pixels is None:
            raise ValueError("SegmenterLoss(reconstruction_weight > 0) needs TrainableSegmenter(reconstruction=True)")
        if pixels is not None:
            # Padding outside the image content is reconstructed too (it is constant: cheap to learn).
            mse = F.mse_loss(pixels.float(), pixel_values.float())
            stats["reconstruction_mse"] = float(mse.detach())
            total = total + self.reconstruction_weight * mse * n
        return LossParts(total, n, stats)


def _zero_loss(core: nn.Module, stats: dict[str, float]) -> LossParts:
    """Nothing to learn from: a zero loss that touches every parameter keeps DDP's gradient sync in step."""
    return LossParts(sum(p.sum() * 0.0 for p in core.parameters() if p.requires_grad), 0, stats)


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------
class NoTextTokenizer:
    """A stand-in tokenizer for ``RegionCollator`` when no text is needed: every caption becomes a
    lone EOS (id 0), so batches carry masks and boxes without loading a real tokenizer."""

    eos_token_id = 0
    pad_token_id = 0

    def __call__(self, texts: list[str], **_: Any) -> dict[str, list[list[int]]]:
        return {"input_ids": [[] for _ in texts]}


def _best_mask(out: SegmenterOutput, size: int) -> Tensor:
    """[n, 1, M, h', w'] logits + [n, 1, M] scores -> [n, S, S] bool mask of the highest score."""
    best = out.iou_scores[:, 0].argmax(1)  # [n]
    logits = out.masks[:, 0][torch.arange(len(best)), best]  # [n, h', w']
    return F.interpolate(logits[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0


@torch.no_grad()
def evaluate_segmenter(segmenter: SamSegmenter, dataset, *, batch_size: int = 8, max_images: int | None = None,
                       batches: Iterable | None = None) -> dict[str, float]:
    """Mean mask IoU on ``dataset`` (a RegionDataset with masks, eval mode) for box prompts and for
    one point at each mask's interior (``interior_points``), choosing the mask with the highest
    predicted IoU (SAM's own pick). Beside them: the box filled as the mask (``baseline_box_as_mask``)
    and the best of the M masks by actual IoU (``mask_iou_box_oracle``). Regions without a mask are
    left out (``num_regions`` counts those scored)."""
    from torch.utils.data import DataLoader, Subset

    from sca.training.collate import RegionCollator

    if batches is None:
        if not getattr(dataset, "load_masks", True):
            raise ValueError("evaluate_segmenter needs a dataset built with load_masks=True")
        data = Subset(dataset, range(min(len(dataset), max_images))) if max_images else dataset
        batches = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=RegionCollator(NoTextTokenizer()))
    was_training = segmenter.training
    segmenter.eval()
    device = segmenter.device
    sums = {"mask_iou_box": 0.0, "mask_iou_point": 0.0, "mask_iou_box_oracle": 0.0, "baseline_box_as_mask": 0.0}
    n = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        usable = batch.region_mask & batch.has_mask & batch.masks.flatten(2).any(-1)
        if not usable.any():
            continue
        index = usable.nonzero(as_tuple=True)[0].to(device)
        boxes, gt = batch.boxes[usable], batch.masks[usable]  # [N, 4], [N, S, S]
        size = gt.shape[-1]
        emb = segmenter.encode(batch.pixel_values.to(device, segmenter.dtype))["image_embeddings"][index]
        feats = {"image_embeddings": emb}
        out_box = segmenter.decode(feats, Prompts(boxes=boxes[:, None].to(device)))
        points = interior_points(gt)[:, None, None].to(device)  # [N, 1, 1, 2]
        out_pt = segmenter.decode(feats, Prompts(points=points))
        flat_gt = gt.flatten(1).to(device)
        sums["mask_iou_box"] += float(_mask_iou(_best_mask(out_box, size).flatten(1), flat_gt).sum())
        sums["mask_iou_point"] += float(_mask_iou(_best_mask(out_pt, size).flatten(1), flat_gt).sum())
        every = F.interpolate(out_box.masks[:, 0].float(), size=(size, size), mode="bilinear", align_corners=False)
        sums["mask_iou_box_oracle"] += float(_mask_iou(every.flatten(2) > 0, flat_gt[:, None]).amax(1).sum())
        sums["baseline_box_as_mask"] += float(_mask_iou(box_as_mask(boxes, size).flatten(1), gt.flatten(1)).sum())
        n += len(boxes)
    segmenter.train(was_training)
    if n == 0:
        raise ValueError("evaluate_segmenter found no region with a mask to score")
    return {**{k: v / n for k, v in sums.items()}, "num_regions": n}


# ---------------------------------------------------------------------------------------------------
# One stage from plain config
# ---------------------------------------------------------------------------------------------------
def run_segmenter_stage(*, segmenter: dict[str, Any], data: dict[str, Any], train: dict[str, Any],
                        output_dir: str | os.PathLike, loss: dict[str, Any] | None = None, resume: bool = True,
                        eval_images: int | None = None, num_threads: int | None = None, accelerator=None,
                        progress: bool = True) -> TrainResult:
    """Train a promptable SAM from plain dicts (see the module docstring) and score it on the val split.

    segmenter: an image-encoder registry spec ({"name": "tiny-sam", "image_size": 128, ...}) whose
        entry builds a SamSegmenter. data: DataConfig fields (``val_records`` required; masks are
        always loaded). train: TrainConfig fields. loss: SegmenterLoss options.
    eval_images: score only the first N val images. num_threads: torch CPU threads for this stage
        (``train.torch_threads`` when that is unset). A tiny SAM is many small ops: at width 32 on a
        busy 2-core machine one thread ran a step 5-15x faster than two (threads spin-waiting on
        each other); the width-64 embedded SAM on an idle machine: 0.31 s/step with two threads,
        0.44 with one (its data worker needs ~0.03 s per batch).
    Returns the Trainer's result with ``metrics`` = the figures written to ``metrics.json``.
    """
    from accelerate.utils import set_seed

    from sca.models import load_registries
    from sca.training.collate import RegionCollator
    from sca.training.config import TrainConfig
    from sca.training.run import DataConfig, build_datasets
    from sca.training.trainer import Trainer

    spec = dict(segmenter)
    name = spec.pop("name", None)
    if not name:
        raise ValueError(f"segmenter spec needs a 'name' (an image-encoder registry entry), got {segmenter!r}")
    data_cfg = DataConfig.from_dict({**data, "load_masks": True})
    if not data_cfg.val_records:
        raise ValueError("the segmenter stage reports mask IoU on the val split: give data.val_records")
    train_cfg = TrainConfig.from_dict(train)
    if num_threads and not train_cfg.torch_threads:
        train_cfg.torch_threads = int(num_threads)
    set_seed(train_cfg.seed)  # the random init is the same in a resumed run
    seg = load_registries()[0].build(name, **spec)
    loss_fn = SegmenterLoss(**(loss or {}))
    model = TrainableSegmenter(seg, reconstruction=loss_fn.reconstruction_weight > 0,
                               token_masks=loss_fn.token_mask_weight > 0)
    model.train()
    train_set, val_set = build_datasets(data_cfg, image_size=seg.image_size, pixel_mean=seg.pixel_mean,
                                        pixel_std=seg.pixel_std, regions_per_image=train_cfg.regions_per_image,
                                        seed=train_cfg.seed)
    timer = {"start": time.perf_counter()}
    # Checkpoints of another configuration are not resumed (the Trainer's fingerprint).
    run_config = {"segmenter": {"name": name, **spec}, "data": data_cfg.__dict__, "train": train_cfg.to_dict(),
                  "loss": dict(loss or {})}

    def eval_fn(m: TrainableSegmenter, step: int) -> dict[str, float]:
        return evaluate_segmenter(m.segmenter, val_set, max_images=eval_images)

    trainer = Trainer(model, train_set, collate_fn=RegionCollator(NoTextTokenizer()), loss_fn=loss_fn,
                      config=train_cfg, output_dir=output_dir, eval_fn=eval_fn, accelerator=accelerator,
                      progress=progress, run_config=run_config)
    result = trainer.fit(resume=resume)
    if trainer.accelerator.is_main_process:
        metrics = {**result.metrics, "steps": result.steps, "final_loss": result.final_loss,
                   "seconds": round(time.perf_counter() - timer["start"], 1),
                   "segmenter": {"name": name, **spec}, "model": str(Path(output_dir) / "model")}
        (Path(output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        result.metrics = metrics
    return result
