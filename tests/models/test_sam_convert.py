"""Original-checkpoint loading: our segmenters give what SAM / SAM-HQ themselves give for the same
weights, and timm's SAM ViT gives what transformers' does.

Oracles are the reference packages (segment-anything==1.0, segment-anything-hq==0.3, in the dev
extra), built at toy size with random weights that are written to a real ``.pth`` and loaded back
through the registry entries' own loading path.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from sam_oracles import ATOL, build_original_sam, original_decode, prompt_sets, randomize_, sam_pixels

from sca.models import load_registries
from sca.models.segmenters.base import DECODER_EPS_CONFIG_KEY, Prompts
from sca.models.segmenters.convert import (
    ORIGINAL_DECODER_LAYER_NORM_EPS,
    CheckpointError,
    convert_original_sam_state_dict,
    load_original_sam_checkpoint,
    read_state_dict,
    sam_config_from_state_dict,
)

IMAGE_ENCODERS, _ = load_registries()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Toy-size models run faster on one thread (no OpenMP fork/join per tiny op, which on a shared
    2-core machine can cost more than the op); restored afterwards for the rest of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def original_sam():
    torch.manual_seed(1)
    return build_original_sam()


@pytest.fixture(scope="module")
def sam_file(original_sam, tmp_path_factory):
    path = tmp_path_factory.mktemp("sam") / "sam_vit_tiny.pth"
    torch.save(original_sam.state_dict(), path)
    return path


# ---------------------------------------------------------------------------------------------------
# SAM
# ---------------------------------------------------------------------------------------------------
def test_sam_file_matches_segment_anything(original_sam, sam_file):
    ours = IMAGE_ENCODERS.build("tiny-sam", weights=str(sam_file)).eval()
    images = torch.rand(2, 3, 64, 64) * 255
    x = sam_pixels(images)
    with torch.no_grad():
        ref_emb = original_sam.image_encoder(original_sam.preprocess(images))
        features = ours.encode(x)
        torch.testing.assert_close(features["image_embeddings"], ref_emb, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.image_positional_embeddings(), original_sam.prompt_encoder.get_dense_pe(),
                                   atol=ATOL, rtol=0)
        for kind, prompts in prompt_sets(64, 2, 3).items():
            for multimask in (True, False):
                out = ours.decode(features, prompts, multimask_output=multimask)
                for b in range(2):
                    masks, iou, rec = original_decode(original_sam, ref_emb, prompts, b, multimask)
                    msg = f"{kind}, multimask={multimask}, image {b}"
                    torch.testing.assert_close(out.masks[b], masks, atol=ATOL, rtol=0, msg=msg)
                    torch.testing.assert_close(out.iou_scores[b], iou, atol=ATOL, rtol=0, msg=msg)
                    # The tokens SCA's mixer reads are the original transformer's outputs.
                    torch.testing.assert_close(out.tokens[b], rec["tokens"], atol=ATOL, rtol=0, msg=msg)
                    torch.testing.assert_close(out.image_tokens[b], rec["keys"], atol=ATOL, rtol=0, msg=msg)


def test_sam_file_matches_segment_anything_end_to_end(original_sam, sam_file):
    """segment-anything's own Sam.forward (preprocessing, prompt and mask decoding) on a box prompt."""
    ours = IMAGE_ENCODERS.build("tiny-sam", weights=str(sam_file)).eval()
    images = torch.rand(2, 3, 64, 64) * 255
    boxes = torch.tensor([[[3.0, 5.0, 40.0, 33.0]], [[10.0, 12.0, 62.0, 50.0]]])
    with torch.no_grad():
        ref = original_sam(
            [{"image": images[b], "original_size": (64, 64), "boxes": boxes[b]} for b in range(2)],
            multimask_output=True,
        )
        out = ours.decode(ours.encode(sam_pixels(images)), Prompts(boxes=boxes))
    for b in range(2):
        torch.testing.assert_close(out.masks[b], ref[b]["low_res_logits"], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.iou_scores[b], ref[b]["iou_predictions"], atol=ATOL, rtol=0)


def test_config_inferred_from_an_original_checkpoint(tmp_path):
    """Glue for any original size: the config is read from tensor shapes, and the model built from it
    loads the file strictly and matches segment-anything."""
    torch.manual_seed(2)
    sam = build_original_sam(depth=3, global_idx=(0, 2), window=2, width=48, heads=3, mlp_ratio=3, dec_mlp=64)
    path = tmp_path / "sam_other.pth"
    torch.save(sam.state_dict(), path)
    config = sam_config_from_state_dict(read_state_dict(path), decoder_heads=4)
    v = config.vision_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, list(v.global_attn_indexes), v.window_size,
            v.mlp_dim, v.image_size, v.patch_size) == (48, 3, 3, [0, 2], 2, 144, 64, 8)
    assert config.mask_decoder_config.mlp_dim == 64 and config.prompt_encoder_config.mask_input_channels == 8

    from transformers import SamModel

    from sca.models.segmenters.base import SamSegmenter

    model = SamModel(config)
    load_original_sam_checkpoint(model, path)
    ours = SamSegmenter(model).eval()
    images = torch.rand(1, 3, 64, 64) * 255
    prompts = prompt_sets(64, 1, 2)["box+points"]
    with torch.no_grad():
        emb = sam.image_encoder(sam.preprocess(images))
        out = ours.decode(ours.encode(sam_pixels(images)), prompts)
        masks, iou, _ = original_decode(sam, emb, prompts, 0, True)
    torch.testing.assert_close(out.masks[0], masks, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.iou_scores[0], iou, atol=ATOL, rtol=0)


def test_safetensors_file_loads_the_same(original_sam, sam_file, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "sam_vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in original_sam.state_dict().items()}, str(path))
    a = IMAGE_ENCODERS.build("tiny-sam", weights=str(sam_file)).state_dict()
    b = IMAGE_ENCODERS.build("tiny-sam", weights=str(path)).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def decoder_eps(segmenter) -> set[float]:
    return {m.eps for m in segmenter.sam.mask_decoder.transformer.modules() if isinstance(m, torch.nn.LayerNorm)}


def test_hf_folder_round_trip(sam_file, tmp_path):
    """A converted model saved as a Hugging Face folder loads back through the folder path, with the
    original decoder's LayerNorm eps (recorded in the folder's config), so it computes the same."""
    ours = IMAGE_ENCODERS.build("tiny-sam", weights=str(sam_file)).eval()
    assert decoder_eps(ours) == {ORIGINAL_DECODER_LAYER_NORM_EPS}
    ours.sam.save_pretrained(tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())["mask_decoder_config"]
    assert saved[DECODER_EPS_CONFIG_KEY] == 1e-5 and saved["layer_norm_eps"] == 1e-6  # the mixer's stays
    again = IMAGE_ENCODERS.build("tiny-sam", weights=str(tmp_path / "hf")).eval()
    assert decoder_eps(again) == {ORIGINAL_DECODER_LAYER_NORM_EPS}
    x = torch.randn(1, 3, 64, 64)
    prompts = prompt_sets(64, 1, 2)["box"]
    with torch.no_grad():
        a, b = ours.decode(ours.encode(x), prompts), again.decode(again.encode(x), prompts)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.iou_scores, b.iou_scores)
    assert again.source == {"weights": str(tmp_path / "hf")}


@pytest.fixture(scope="module")
def sam_hq_file(tmp_path_factory):
    pytest.importorskip("segment_anything_hq")
    torch.manual_seed(6)
    path = tmp_path_factory.mktemp("sam_hq") / "sam_hq_vit_tiny.pth"
    torch.save(build_original_sam("segment_anything_hq").state_dict(), path)
    return path


def captioner_outputs(model):
    """masks, IoU scores and caption logits of one forward pass (box prompts, two regions)."""
    from sca.models.text import encode_captions

    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    prompts = prompt_sets(64, 1, 2)["box"]
    with torch.no_grad():
        out = model(pixel_values=pixels, prompts=prompts, return_logits=True,
                    captions=encode_captions(model.lm.tokenizer, ["a red circle", "two cats"]))
    return out.masks, out.iou_scores, out.logits


@pytest.mark.parametrize("name, file", [("tiny-sam", "sam_file"), ("tiny-sam-hq", "sam_hq_file"),
                                        ("tiny-timm-samvit", "sam_file")])
def test_captioner_from_an_original_file_saves_and_reloads_identically(name, file, request, tmp_path):
    """The original decoder's eps (1e-5) survives save_pretrained / from_pretrained: in the image
    encoder folder (tiny-sam, tiny-sam-hq) or in the weights of a composed segmenter (timm's ViT);
    config.json records it as the spec option decoder_layer_norm_eps either way."""
    import dataclasses

    from sca.models.captioner import SCAModel
    from sca.models.config import TINY_CONFIG

    torch.manual_seed(0)
    weights = str(request.getfixturevalue(file))
    model = SCAModel(dataclasses.replace(TINY_CONFIG, image_encoder={"name": name, "weights": weights})).eval()
    assert model.segmenter.decoder_layer_norm_eps == ORIGINAL_DECODER_LAYER_NORM_EPS
    model.save_pretrained(tmp_path / "ckpt")
    spec = json.loads((tmp_path / "ckpt" / "config.json").read_text())["image_encoder"]
    assert spec["decoder_layer_norm_eps"] == 1e-5 and spec["name"] == name
    again = SCAModel.from_pretrained(tmp_path / "ckpt").eval()
    assert decoder_eps(again.segmenter) == {ORIGINAL_DECODER_LAYER_NORM_EPS}
    assert again.mixer.transformer.layers[0].layer_norm1.eps == model.mixer.transformer.layers[0].layer_norm1.eps
    for label, a, b in zip(("masks", "iou_scores", "logits"), captioner_outputs(model), captioner_outputs(again),
                           strict=True):
        assert torch.equal(a, b), f"{name}: {label} differ by {(a - b).abs().max().item():.2e}"
    # Saved again, the reloaded model records the same eps.
    again.save_pretrained(tmp_path / "ckpt2")
    assert json.loads((tmp_path / "ckpt2" / "config.json").read_text())["image_encoder"] == spec


def test_decoder_eps_option_for_an_encoder_without_a_sam_decoder_is_refused():
    from sca.models.segmenters.base import Segmenter

    with pytest.raises(ValueError, match="only SAM-based image encoders take it"):
        Segmenter().set_decoder_layer_norm_eps(1e-5)
    with pytest.raises(ValueError, match=r"eps must be a float in \(0, 1\), got 0"):
        IMAGE_ENCODERS.build("tiny-sam").set_decoder_layer_norm_eps(0)


# ---------------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------------
def test_missing_and_unexpected_keys_are_listed_with_the_file(original_sam, tmp_path):
    state = original_sam.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state["mask_decoder.extra_token.weight"] = torch.zeros(1, 32)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        IMAGE_ENCODERS.build("tiny-sam", weights=str(path))
    msg = str(err.value)
    assert "broken.pth" in msg
    assert "missing keys: mask_decoder.iou_token.weight" in msg
    assert "unexpected keys: mask_decoder.extra_token.weight" in msg


def test_shape_mismatch_names_the_tensor(sam_file):
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*patch_embed\.projection\.weight: checkpoint "
                                              r"\(32, 3, 8, 8\) vs model \(32, 3, 16, 16\)"):
        IMAGE_ENCODERS.build("tiny-sam", weights=str(sam_file), patch_size=16)


def test_code_carrying_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": partial(print, "side effect")}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)


def test_a_hf_weights_file_is_not_mistaken_for_an_original_checkpoint(sam_file, tmp_path):
    ours = IMAGE_ENCODERS.build("tiny-sam", weights=str(sam_file))
    path = tmp_path / "model.pth"
    torch.save(ours.sam.state_dict(), path)
    with pytest.raises(CheckpointError, match="not an original SAM-layout checkpoint"):
        IMAGE_ENCODERS.build("tiny-sam", weights=str(path))


def test_unknown_weights_name_fails_clearly():
    with pytest.raises(FileNotFoundError, match="neither a file, a folder, a hub id"):
        IMAGE_ENCODERS.build("sam-hq-vit-b", weights="not-a-tag")
    with pytest.raises(FileNotFoundError, match="mobile_sam"):
        IMAGE_ENCODERS.build("mobile-sam", weights="not-a-tag")


def test_key_mapping_covers_every_original_key(original_sam):
    converted = convert_original_sam_state_dict(original_sam.state_dict())
    from transformers import SamModel

    from sca.models.segmenters.sam import tiny_sam_config

    assert set(converted) == set(SamModel(tiny_sam_config()).state_dict())


# ---------------------------------------------------------------------------------------------------
# SAM-HQ
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def original_sam_hq():
    pytest.importorskip("segment_anything_hq")
    torch.manual_seed(4)
    return build_original_sam("segment_anything_hq")


def test_sam_hq_file_matches_sam_hq(original_sam_hq, tmp_path):
    path = tmp_path / "sam_hq_vit_tiny.pth"
    torch.save(original_sam_hq.state_dict(), path)
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        ref_emb, interm = original_sam_hq.image_encoder(original_sam_hq.preprocess(images))
    for hq_token_only in (False, True):
        ours = IMAGE_ENCODERS.build("tiny-sam-hq", weights=str(path), hq_token_only=hq_token_only).eval()
        with torch.no_grad():
            features = ours.encode(sam_pixels(images))
            torch.testing.assert_close(features["image_embeddings"], ref_emb, atol=ATOL, rtol=0)
            torch.testing.assert_close(features["intermediate_embeddings"], interm[0], atol=ATOL, rtol=0)
            # Every prompt kind (box, points, box+points, mask only, box+mask) with SAM + HQ masks;
            # the HQ-only output on the mask kinds.
            for kind, prompts in prompt_sets(64, 2, 3).items():
                if hq_token_only and kind not in ("mask", "box+mask"):
                    continue
                for multimask in (True, False):
                    out = ours.decode(features, prompts, multimask_output=multimask)
                    for b in range(2):
                        masks, iou, rec = original_decode(
                            original_sam_hq, ref_emb, prompts, b, multimask, hq_token_only=hq_token_only,
                            interm_embeddings=[t[b:b + 1] for t in interm],
                        )
                        msg = f"{kind}, multimask={multimask}, hq_token_only={hq_token_only}, image {b}"
                        # SAM-HQ's multimask output is its best-IoU mask; ours lists the three SAM masks
                        # sorted by IoU (each plus the HQ mask), so the first is that one.
                        torch.testing.assert_close(out.masks[b, :, :1], masks, atol=ATOL, rtol=0, msg=msg)
                        torch.testing.assert_close(out.iou_scores[b, :, :1], iou, atol=ATOL, rtol=0, msg=msg)
                        torch.testing.assert_close(out.tokens[b], rec["tokens"], atol=ATOL, rtol=0, msg=msg)
                        torch.testing.assert_close(out.image_tokens[b], rec["keys"], atol=ATOL, rtol=0, msg=msg)
    assert out.tokens.shape[2] == 1 + 4 + 1 + 2  # iou, 4 masks, hq, box corners (last set: box+mask)
    assert "mask" in prompt_sets(64, 2, 3)  # the mask-only prompt was among the kinds compared


# ---------------------------------------------------------------------------------------------------
# timm's SAM ViT
# ---------------------------------------------------------------------------------------------------
def test_timm_samvit_matches_transformers_sam_with_the_same_weights(sam_file):
    hf = IMAGE_ENCODERS.build("tiny-sam", weights=str(sam_file)).eval()
    tm = IMAGE_ENCODERS.build("tiny-timm-samvit", weights=str(sam_file)).eval()
    x = torch.randn(2, 3, 64, 64)
    prompts = prompt_sets(64, 2, 2)["box"]
    with torch.no_grad():
        fa, fb = hf.encode(x), tm.encode(x)
        torch.testing.assert_close(fb["image_embeddings"], fa["image_embeddings"], atol=ATOL, rtol=0)
        oa, ob = hf.decode(fa, prompts), tm.decode(fb, prompts)
    torch.testing.assert_close(ob.masks, oa.masks, atol=ATOL, rtol=0)
    torch.testing.assert_close(ob.iou_scores, oa.iou_scores, atol=ATOL, rtol=0)


def test_timm_samvit_refuses_decoder_weights_beside_a_full_checkpoint(sam_file):
    with pytest.raises(ValueError, match="leave it unset"):
        IMAGE_ENCODERS.build("timm-samvit-b", weights=str(sam_file), sam_weights="sa1b")


# ---------------------------------------------------------------------------------------------------
# Real size (random init): minutes on 2 cores
# ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_b_checkpoint_matches_segment_anything_at_real_size(tmp_path):
    from segment_anything import sam_model_registry

    torch.manual_seed(5)
    sam = randomize_(sam_model_registry["vit_b"](), scale=0.02).eval()
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), path)
    del sam
    sam = sam_model_registry["vit_b"](checkpoint=str(path)).eval()
    images = torch.rand(1, 3, 1024, 1024) * 255
    prompts = Prompts(boxes=torch.tensor([[[100.0, 150.0, 700.0, 800.0], [400.0, 20.0, 1000.0, 500.0]]]))
    with torch.no_grad():
        ref_emb = sam.image_encoder(sam.preprocess(images))
        masks, iou, _ = original_decode(sam, ref_emb, prompts, 0, True)
        for name in ("sam-vit-b", "timm-samvit-b"):
            ours = IMAGE_ENCODERS.build(name, weights=str(path)).eval()
            features = ours.encode(sam_pixels(images))
            torch.testing.assert_close(features["image_embeddings"], ref_emb, atol=1e-4, rtol=0, msg=name)
            out = ours.decode(features, prompts)
            torch.testing.assert_close(out.masks[0], masks, atol=1e-4, rtol=0, msg=name)
            torch.testing.assert_close(out.iou_scores[0], iou, atol=1e-4, rtol=0, msg=name)
