"""MobileSAM: our timm-TinyVit image encoder + transformers SAM decoder, loaded from a mobile_sam.pt-layout
file, gives what MobileSAM's reference code gives (oracle: PyPI ``mobilesam-mirror``, which ships
MobileSAM's ``mobile_sam`` package; in the dev extra).

The reference TinyViT hard-codes a 64 x 64 output grid (1024 px input) and its stride-1 last
downsampling (for 320/448/576 channels), so the fast test keeps 1024 px and 320 final channels and
shrinks everything else.
"""

from __future__ import annotations

import pytest
import torch
from sam_oracles import ATOL, original_decode, preserved_timm_registry, randomize_, sam_pixels

from sca.models import load_registries
from sca.models.segmenters.base import Prompts
from sca.models.segmenters.mobile_sam import MobileSamImageEncoder, TinyVitSpec, build_mobile_sam
from sca.models.segmenters.sam import tiny_sam_config

IMAGE_ENCODERS, _ = load_registries()

SMALL = TinyVitSpec(embed_dims=(8, 16, 24, 320), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4),
                    window_sizes=(7, 7, 14, 7), out_channels=256)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Toy-size models run faster on one thread (no OpenMP fork/join per tiny op, which on a shared
    2-core machine can cost more than the op); restored afterwards for the rest of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mobile_sam_modeling():
    with preserved_timm_registry():
        return pytest.importorskip("mobile_sam.modeling")


def small_reference_mobile_sam(modeling):
    """MobileSAM's own modules (build_sam_vit_t's design) at SMALL dims, random weights."""
    encoder = modeling.TinyViT(
        img_size=1024, in_chans=3, num_classes=1000, embed_dims=list(SMALL.embed_dims), depths=list(SMALL.depths),
        num_heads=list(SMALL.num_heads), window_sizes=list(SMALL.window_sizes), mlp_ratio=4.0, drop_rate=0.0,
        drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
    )
    sam = modeling.Sam(
        image_encoder=encoder,
        prompt_encoder=modeling.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                              input_image_size=(1024, 1024), mask_in_chans=8),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=1024, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    )
    return randomize_(sam, scale=0.05).eval()


def test_mobile_sam_file_matches_mobile_sam(mobile_sam_modeling, tmp_path):
    torch.manual_seed(7)
    ref = small_reference_mobile_sam(mobile_sam_modeling)
    path = tmp_path / "mobile_sam_small.pt"
    torch.save(ref.state_dict(), path)

    config = tiny_sam_config(image_size=1024, patch_size=16, hidden_size=256, decoder_heads=8)
    ours = build_mobile_sam(SMALL, config, str(path), None).eval()
    ours.train()  # the TinyViT encoder keeps BatchNorm in eval mode regardless
    assert not ours.sam.vision_encoder.training

    images = torch.rand(1, 3, 1024, 1024) * 255
    # One region with a box and a background point (the decoder is the code tested in test_sam_convert).
    prompts = Prompts(
        boxes=torch.tensor([[[100.0, 120.0, 600.0, 700.0]]]),
        points=torch.tensor([[[[300.0, 400.0]]]]),
        point_labels=torch.tensor([[[0]]]),
    )
    with torch.no_grad():
        ref_emb = ref.image_encoder(ref.preprocess(images))
        features = ours.encode(sam_pixels(images))
        # timm's TinyVit attends with fused SDPA, MobileSAM's with explicit softmax: float32 rounding
        # differences of up to ~1.1e-5 on embeddings of magnitude ~2 (5e-6 relative) are measured.
        torch.testing.assert_close(features["image_embeddings"], ref_emb, atol=ATOL, rtol=1e-5)
        out = ours.decode(features, prompts)
        masks, iou, rec = original_decode(ref, ref_emb, prompts, 0, True)
    torch.testing.assert_close(out.masks[0], masks, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.iou_scores[0], iou, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(out.tokens[0], rec["tokens"], atol=ATOL, rtol=1e-5)


def test_mobile_sam_layout_and_size_on_meta():
    """The entry's encoder has MobileSAM's parameter count (TinyViT-5M + neck, classifier excluded)."""
    with torch.device("meta"):
        seg = IMAGE_ENCODERS.build("mobile-sam")
    n_encoder = sum(p.numel() for p in seg.sam.vision_encoder.parameters())
    assert n_encoder == 5_743_892  # = MobileSAM's image_encoder 6,065,892 minus its unused 320->1000 head + norm
    assert seg.image_size == 1024 and seg.embedding_size == 64 and seg.hidden_size == 256


def test_stride_one_last_downsampling_gives_sam_embedding_size():
    enc = MobileSamImageEncoder(TinyVitSpec(embed_dims=(8, 8, 8, 16), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                                            window_sizes=(2, 2, 2, 2), out_channels=8))
    assert enc(torch.randn(1, 3, 64, 64)).shape == (1, 8, 4, 4)  # stride 16, as SAM's ViT


@pytest.mark.slow
def test_real_size_mobile_sam_checkpoint_matches_reference(mobile_sam_modeling, tmp_path):
    with preserved_timm_registry():
        from mobile_sam import sam_model_registry

        torch.manual_seed(8)
        ref = randomize_(sam_model_registry["vit_t"](), scale=0.02).eval()
    path = tmp_path / "mobile_sam.pt"
    torch.save(ref.state_dict(), path)
    ours = IMAGE_ENCODERS.build("mobile-sam", weights=str(path)).eval()
    images = torch.rand(1, 3, 1024, 1024) * 255
    prompts = Prompts(boxes=torch.tensor([[[100.0, 120.0, 600.0, 700.0]]]))
    with torch.no_grad():
        ref_emb = ref.image_encoder(ref.preprocess(images))
        features = ours.encode(sam_pixels(images))
        torch.testing.assert_close(features["image_embeddings"], ref_emb, atol=1e-4, rtol=0)
        out = ours.decode(features, prompts)
        masks, iou, _ = original_decode(ref, ref_emb, prompts, 0, True)
    torch.testing.assert_close(out.masks[0], masks, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.iou_scores[0], iou, atol=1e-4, rtol=0)
