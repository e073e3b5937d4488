"""Image-encoder registry entries: every tiny entry honours the Segmenter contract; paper-size entries
build on the meta device with the expected sizes; backbones train only their neck; weights load from
local files in the real formats. Oracle comparisons live in test_sam_convert.py / test_mobile_sam.py.
"""

from __future__ import annotations

import pytest
import torch
from sam_oracles import build_original_sam

from sca.models import load_registries
from sca.models.segmenters.base import Prompts, check_segmenter
from sca.registry import UnknownNameError

IMAGE_ENCODERS, _ = load_registries()
TINY = IMAGE_ENCODERS.names(tiny=True)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Toy-size models run faster on one thread (no OpenMP fork/join per tiny op, which on a shared
    2-core machine can cost more than the op); restored afterwards for the rest of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory):
    """An original segment-anything checkpoint of tiny-sam's size."""
    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_tiny.pth"
    torch.save(build_original_sam().state_dict(), path)
    return path


def all_prompt_kinds(S: int, B: int = 2, R: int = 3, h: int = 8) -> dict[str, Prompts]:
    g = torch.Generator().manual_seed(0)
    xy0 = torch.rand(B, R, 2, generator=g) * S * 0.5
    boxes = torch.cat([xy0, xy0 + 2 + torch.rand(B, R, 2, generator=g) * S * 0.4], -1)
    points = torch.rand(B, R, 2, 2, generator=g) * (S - 1)
    labels = torch.tensor([1, 0]).expand(B, R, 2).clone()
    return {
        "boxes": Prompts(boxes=boxes),
        "points": Prompts(points=points, point_labels=labels),
        "mask": Prompts(masks=torch.randn(B, R, 1, 4 * h, 4 * h, generator=g) * 3),  # no prompt tokens
        "box+mask": Prompts(boxes=boxes, masks=torch.randn(B, R, 1, 4 * h, 4 * h, generator=g)),  # SAM: 4h x 4w
    }


def prompt_token_count(prompts: Prompts) -> int:
    """SAM's sparse prompt tokens: 2 box corners, points (+ a pad token without a box), none for a mask."""
    boxes = 2 if prompts.boxes is not None else 0
    points = 0 if prompts.points is None else prompts.points.shape[2] + (prompts.boxes is None)
    return boxes + points


# ---------------------------------------------------------------------------------------------------
# The contract, for every tiny entry
# ---------------------------------------------------------------------------------------------------
def test_the_new_tiny_entries_are_registered():
    for name in ("tiny-sam-hq", "tiny-mobile-sam", "tiny-timm-samvit", "tiny-timm-backbone", "tiny-open-clip-backbone"):
        assert name in TINY


@pytest.mark.parametrize("name", TINY)
def test_tiny_entry_encodes_and_decodes_every_prompt_kind(name):
    seg = IMAGE_ENCODERS.build(name).eval()
    check_segmenter(seg, name)
    S, h, C = seg.image_size, seg.embedding_size, seg.hidden_size
    with torch.no_grad():
        features = seg.encode(torch.randn(2, 3, S, S))
        assert features["image_embeddings"].shape == (2, C, h, h)
        assert all(v.shape[0] == 2 for v in features.values()), "features must be batch-first"
        assert seg.image_positional_embeddings().shape == (1, C, h, h)
        hq = 1 if "sam-hq" in name else 0
        for kind, prompts in all_prompt_kinds(S, h=h).items():
            for multimask, M in ((True, 3), (False, 1)):
                out = seg.decode(features, prompts, multimask_output=multimask)
                prompt_tokens = prompt_token_count(prompts)
                assert out.masks.shape == (2, 3, M, 4 * h, 4 * h), kind
                assert out.iou_scores.shape == (2, 3, M), kind
                assert out.tokens.shape == (2, 3, 1 + 4 + hq + prompt_tokens, C), kind
                assert out.image_tokens.shape == (2, 3, h * h, C), kind
                for field in ("masks", "iou_scores", "tokens", "image_tokens"):
                    assert torch.isfinite(getattr(out, field)).all(), f"{name} {kind}: {field} not finite"


@pytest.mark.parametrize("name", TINY)
def test_cached_features_of_one_image_decode_as_in_the_batch(name):
    """Features are batch-first: slicing them (a cache of one image) gives the batch's answer."""
    seg = IMAGE_ENCODERS.build(name).eval()
    S = seg.image_size
    prompts = all_prompt_kinds(S)["boxes"]
    with torch.no_grad():
        features = seg.encode(torch.randn(2, 3, S, S))
        batch = seg.decode(features, prompts)
        one = seg.decode({k: v[1:] for k, v in features.items()}, prompts.map(lambda t: t[1:]))
    torch.testing.assert_close(one.masks[0], batch.masks[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one.tokens[0], batch.tokens[1], atol=1e-5, rtol=1e-5)


def test_unknown_names_and_options_fail_with_the_registry_error():
    with pytest.raises(UnknownNameError, match=r"Unknown image encoder 'mobile-samm'.*Closest: mobile-sam"):
        IMAGE_ENCODERS.build("mobile-samm")
    with pytest.raises(UnknownNameError, match=r"Closest: .*sam-hq-vit-h"):
        IMAGE_ENCODERS.build("sam-hq-vit-hh")
    with pytest.raises(TypeError, match=r"'tiny-mobile-sam' got unknown option\(s\) \['model_name'\]"):
        IMAGE_ENCODERS.build("tiny-mobile-sam", model_name="x")


# ---------------------------------------------------------------------------------------------------
# Paper-size entries on the meta device
# ---------------------------------------------------------------------------------------------------
def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def hq_extra_params(vit_dim: int, c: int = 256) -> int:
    """SAM-HQ's additions to SAM's decoder (SysCV/sam-hq mask_decoder_hq.py), counted by layer."""
    mlp = (c * c + c) * 2 + (c * (c // 8) + c // 8)  # hf_mlp: 3 linear layers
    compress = (vit_dim * c * 4 + c) + 2 * c + (c * (c // 8) * 4 + c // 8)
    encoder = (c * (c // 4) * 4 + c // 4) + 2 * (c // 4) + ((c // 4) * (c // 8) * 4 + c // 8)
    maskfeature = ((c // 8) * (c // 4) * 9 + c // 4) + 2 * (c // 4) + ((c // 4) * (c // 8) * 9 + c // 8)
    return c + mlp + compress + encoder + maskfeature


@pytest.mark.parametrize("size", ["b", "l", "h"])
def test_sam_variants_have_sam_sizes_on_meta(size):
    with torch.device("meta"):
        sam = IMAGE_ENCODERS.build(f"sam-vit-{size}")
        hq = IMAGE_ENCODERS.build(f"sam-hq-vit-{size}")
        tm = IMAGE_ENCODERS.build(f"timm-samvit-{size}")
    for seg in (hq, tm):
        assert (seg.image_size, seg.embedding_size, seg.hidden_size) == (1024, 64, 256)
        assert seg.device.type == "meta"
    # timm's SAM ViT is the same network as transformers' (same parameter count, neck included).
    assert n_params(tm.sam.vision_encoder) == n_params(sam.sam.vision_encoder)
    assert n_params(tm) == n_params(sam)
    width = sam.sam.config.vision_config.hidden_size
    assert n_params(hq) - n_params(sam) == hq_extra_params(width)


@pytest.mark.parametrize("model_name, grid_input", [
    ("vit_large_patch14_clip_224.openai", (224, 224)),
    ("vit_large_patch14_dinov2.lvd142m", (518, 518)),
    ("vit_large_patch16_224.mae", (224, 224)),
])
def test_paper_timm_backbones_build_on_meta(model_name, grid_input):
    with torch.device("meta"):
        seg = IMAGE_ENCODERS.build("timm-backbone", model_name=model_name)
    enc = seg.sam.vision_encoder
    assert enc.input_size == grid_input and enc.backbone.num_channels == 1024
    assert 300e6 < n_params(enc.backbone) < 310e6  # ViT-L
    assert n_params(enc.neck) == 1024 * 256 + 256 * 256 * 9 + 4 * 256  # SAM-style neck, trainable
    assert seg.trainable_module_names() == ["sam.vision_encoder.neck"]
    assert seg.source["model_name"] == model_name


def test_open_clip_backbone_builds_on_meta():
    with torch.device("meta"):
        seg = IMAGE_ENCODERS.build("open-clip-backbone", model_name="ViT-L-14")
    enc = seg.sam.vision_encoder
    assert enc.input_size == (224, 224) and enc.backbone.num_channels == 1024
    assert 300e6 < n_params(enc.backbone) < 310e6
    assert not any(p.requires_grad for p in enc.backbone.parameters())


# ---------------------------------------------------------------------------------------------------
# Backbone + neck: what trains, what the backbone sees
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-timm-backbone", "tiny-open-clip-backbone"])
def test_only_the_neck_trains_and_the_backbone_stays_in_eval(name):
    seg = IMAGE_ENCODERS.build(name)
    seg.train()
    enc = seg.sam.vision_encoder
    assert seg.trainable_module_names() == ["sam.vision_encoder.neck"]
    assert seg.get_submodule("sam.vision_encoder.neck") is enc.neck
    assert enc.neck.training and not enc.backbone.training
    S = seg.image_size
    out = seg.decode(seg.encode(torch.randn(1, 3, S, S)), all_prompt_kinds(S, B=1)["boxes"])
    (out.tokens.square().mean() + out.masks.mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.neck.parameters())
    assert all(not p.requires_grad and p.grad is None for p in enc.backbone.parameters())


@pytest.mark.parametrize("name", ["tiny-timm-backbone", "tiny-open-clip-backbone"])
def test_backbone_receives_its_own_normalisation_and_size(name):
    seg = IMAGE_ENCODERS.build(name)
    enc = seg.sam.vision_encoder
    colour = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    sam_mean, sam_std = torch.tensor(seg.pixel_mean).view(1, 3, 1, 1), torch.tensor(seg.pixel_std).view(1, 3, 1, 1)
    pixels = ((colour - sam_mean) / sam_std).expand(1, 3, seg.image_size, seg.image_size)
    x = enc.prepare(pixels)
    assert tuple(x.shape[-2:]) == enc.input_size
    bb_mean, bb_std = torch.tensor(enc.backbone.mean).view(1, 3, 1, 1), torch.tensor(enc.backbone.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ((colour - bb_mean) / bb_std).expand_as(x), atol=1e-5, rtol=1e-5)


def test_timm_backbone_weights_from_a_local_file(tmp_path):
    import timm

    torch.manual_seed(21)
    reference = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)
    path = tmp_path / "test_vit.safetensors"
    from safetensors.torch import save_file

    save_file(reference.state_dict(), str(path))
    seg = IMAGE_ENCODERS.build("tiny-timm-backbone", pretrained=str(path))
    loaded = seg.sam.vision_encoder.backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    assert seg.source["pretrained"] == str(path)
    random = IMAGE_ENCODERS.build("tiny-timm-backbone").sam.vision_encoder.backbone.model.state_dict()
    assert not torch.equal(random["blocks.0.attn.qkv.weight"], reference.state_dict()["blocks.0.attn.qkv.weight"])


def test_timm_backbone_pretrained_errors():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        IMAGE_ENCODERS.build("tiny-timm-backbone", pretrained="/nowhere/weights.safetensors")
    with pytest.raises(ValueError, match="already carries a pretrained tag"):
        IMAGE_ENCODERS.build("tiny-timm-backbone", model_name="test_vit.r160_in1k", pretrained="other")


def test_open_clip_backbone_weights_from_a_local_file(tmp_path):
    import open_clip

    from sca.models.segmenters.backbones import TINY_OPEN_CLIP

    torch.manual_seed(22)
    reference = open_clip.create_model("ViT-B-32", pretrained=None, **TINY_OPEN_CLIP)
    path = tmp_path / "tiny_clip.pt"
    torch.save(reference.state_dict(), path)
    seg = IMAGE_ENCODERS.build("tiny-open-clip-backbone", pretrained=str(path))
    loaded = seg.sam.vision_encoder.backbone.visual.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.visual.state_dict().items())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        IMAGE_ENCODERS.build("tiny-open-clip-backbone", pretrained=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("form", ["original file", "hf folder"])
def test_backbone_sam_decoder_weights_from_file_or_folder(form, sam_file, tmp_path):
    sam = IMAGE_ENCODERS.build("tiny-sam", weights=str(sam_file))
    weights = str(sam_file)
    if form == "hf folder":
        sam.sam.save_pretrained(tmp_path / "hf")
        weights = str(tmp_path / "hf")
    for name in ("tiny-timm-backbone", "tiny-open-clip-backbone"):
        seg = IMAGE_ENCODERS.build(name, sam_weights=weights)
        for part in ("prompt_encoder", "mask_decoder", "shared_image_embedding"):
            want = getattr(sam.sam, part).state_dict()
            got = getattr(seg.sam, part).state_dict()
            assert want.keys() == got.keys()
            assert all(torch.equal(got[k], want[k]) for k in want), (name, part)
        assert seg.source["sam_weights"] == weights


# ---------------------------------------------------------------------------------------------------
# SAM-HQ and MobileSAM specifics
# ---------------------------------------------------------------------------------------------------
def test_sam_hq_needs_its_intermediate_features_and_can_return_the_hq_mask_only():
    seg = IMAGE_ENCODERS.build("tiny-sam-hq", hq_token_only=True).eval()
    prompts = all_prompt_kinds(64)["boxes"]
    with torch.no_grad():
        features = seg.encode(torch.randn(2, 3, 64, 64))
        out = seg.decode(features, prompts)
        assert out.masks.shape == (2, 3, 1, 32, 32) and out.iou_scores.shape == (2, 3, 1)
        with pytest.raises(KeyError, match="intermediate_embeddings"):
            seg.decode({"image_embeddings": features["image_embeddings"]}, prompts)


@pytest.mark.parametrize("hq_token_only", [False, True])
def test_sam_hq_decodes_box_points_and_mask_only_prompts(hq_token_only):
    """Every prompt kind plain SAM takes; a mask-only prompt has no prompt tokens (it used to crash),
    and its masks follow the mask prompt (the dense embedding reaches the two-way transformer)."""
    seg = IMAGE_ENCODERS.build("tiny-sam-hq", hq_token_only=hq_token_only).eval()
    plain = IMAGE_ENCODERS.build("tiny-sam").eval()
    kinds = all_prompt_kinds(64)
    assert kinds["mask"].boxes is None and kinds["mask"].points is None
    with torch.no_grad():
        features = seg.encode(torch.randn(2, 3, 64, 64))
        plain_features = plain.encode(torch.randn(2, 3, 64, 64))
        for kind in ("boxes", "points", "mask"):
            prompts = kinds[kind]
            out = seg.decode(features, prompts)
            assert out.masks.shape == (2, 3, 1 if hq_token_only else 3, 32, 32), kind
            assert out.tokens.shape == (2, 3, 1 + 4 + 1 + prompt_token_count(prompts), 32), kind
            assert plain.decode(plain_features, prompts).tokens.shape[2] == out.tokens.shape[2] - 1, kind
        other = seg.decode(features, Prompts(masks=-kinds["mask"].masks))
    assert not torch.allclose(other.masks, out.masks)
    assert not torch.allclose(other.image_tokens, out.image_tokens)


def test_mobile_sam_encoder_keeps_batchnorm_statistics_in_train_mode():
    seg = IMAGE_ENCODERS.build("tiny-mobile-sam")
    seg.train()
    enc = seg.sam.vision_encoder
    assert not enc.training and not any(m.training for m in enc.modules())
    x = torch.randn(2, 3, seg.image_size, seg.image_size)
    before = [b.clone() for n, b in enc.named_buffers() if n.endswith("running_mean")]
    seg.encode(x)
    after = [b for n, b in enc.named_buffers() if n.endswith("running_mean")]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_mobile_sam_weights_must_be_a_file_or_tag():
    # The mobile_sam.pt layout itself is checked against MobileSAM's code in test_mobile_sam.py.
    with pytest.raises(FileNotFoundError, match="not a file"):
        IMAGE_ENCODERS.build("tiny-mobile-sam", weights="/nowhere/mobile_sam.pt")


# ---------------------------------------------------------------------------------------------------
# In the captioner
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-sam-hq", "tiny-mobile-sam", "tiny-timm-samvit", "tiny-timm-backbone",
                                  "tiny-open-clip-backbone"])
def test_new_encoders_drive_the_captioner_and_only_their_neck_trains(name):
    import dataclasses

    from sca.models.captioner import SCAModel
    from sca.models.config import TINY_CONFIG
    from sca.models.text import encode_captions

    torch.manual_seed(0)
    model = SCAModel(dataclasses.replace(TINY_CONFIG, image_encoder={"name": name})).train()
    S = model.segmenter.image_size
    boxes = torch.tensor([[[1.0, 2, 30, 40], [10, 10, 60, 50]], [[5.0, 5, 20, 20], [30, 30, 50, 60]]])
    caps = encode_captions(model.lm.tokenizer, ["a red circle", "a square", "two cats", "a tree"])
    loss = model(pixel_values=torch.randn(2, 3, S, S), prompts=Prompts(boxes=boxes), captions=caps).loss
    assert torch.isfinite(loss)
    loss.backward()
    segmenter_grads = {n for n, p in model.segmenter.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = model.segmenter.trainable_module_names()
    assert all(any(n.startswith(t + ".") for t in trainable) for n in segmenter_grads), sorted(segmenter_grads)[:5]
    if trainable:  # backbone + neck: the neck learns, and is saved with the captioner's trainable weights
        assert segmenter_grads
        assert any(k.startswith("segmenter.sam.vision_encoder.neck.") for k in model.trainable_state_dict())


def test_take_rows_gives_views_where_the_rows_are_one_image_and_copies_otherwise():
    from sca.models.segmenters.base import take_rows

    one = torch.randn(1, 4, 3, 3)
    index = torch.zeros(5, dtype=torch.long)
    view = take_rows(one, index)
    assert view.shape == (5, 4, 3, 3) and view.data_ptr() == one.data_ptr() and view.stride(0) == 0
    again = take_rows(view, torch.tensor([4, 0, 2]))  # rows of an expanded tensor are all the same
    assert again.shape == (3, 4, 3, 3) and again.data_ptr() == one.data_ptr()
    two = torch.randn(2, 4, 3, 3)
    assert take_rows(two, torch.arange(2)) is two
    picked = take_rows(two, torch.tensor([1, 1, 0]))
    assert torch.equal(picked, two[torch.tensor([1, 1, 0])]) and picked.data_ptr() != two.data_ptr()
    assert take_rows(two, torch.tensor([], dtype=torch.long)).shape == (0, 4, 3, 3)
