"""The collator's batch layout: padding, caption tokens via encode_captions, ids and mapping back."""

import numpy as np
import pytest
import torch
from sca_data_testutil import scene, scene_record, tokenizer, write_png

from sca.data.dataset import RegionDataset
from sca.data.records import Region
from sca.data.report import DataReport
from sca.data.transforms import TransformConfig
from sca.models.text import IGNORE_INDEX, encode_captions
from sca.training.collate import RegionBatch, RegionCollator, make_loader

S = 64


@pytest.fixture
def dataset(tmp_path):
    write_png(tmp_path / "a.png", scene())
    one = scene_record("one", "a.png")
    one.regions = one.regions[:1]
    three = scene_record("three", "a.png")
    three.regions.append(Region(box=(0, 0, 80, 60), phrases=["the whole dark picture"], region_id=3))
    missing = scene_record("missing", "nowhere.png")
    return RegionDataset([three, one, missing], tmp_path, train=False, transform=TransformConfig(image_size=S),
                         load_masks=True)


def test_batch_layout_and_padding(dataset):
    batch = RegionCollator(tokenizer(), max_tokens=5)([dataset[i] for i in range(3)])
    assert isinstance(batch, RegionBatch) and len(batch) == 2 and batch.num_regions == 4
    assert batch.pixel_values.shape == (2, 3, S, S) and batch.pixel_values.dtype == torch.float32
    assert batch.boxes.shape == (2, 3, 4) and batch.region_mask.tolist() == [[True] * 3, [True, False, False]]
    assert batch.task_ids.tolist() == [[1, 0, 1], [1, 1, 1]]  # region 2 is a recognition region
    assert batch.boxes[1, 1].tolist() == [0, 0, S, S]  # padding: the whole frame
    assert batch.masks.shape == (2, 3, S, S) and batch.has_mask.tolist() == [[False] * 3] * 2
    assert batch.image_ids == ["three", "one"] and batch.region_ids == [[1, 2, 3], [1]]
    assert batch.targets == [["a white square", "a red square", "the whole dark picture"], ["a white square"]]
    assert batch.references[0][0] == ["a white square", "white block"]
    assert batch.original_sizes.tolist() == [[60, 80], [60, 80]]
    assert batch.scales.shape == (2, 2) and batch.scales[0, 0].item() == pytest.approx(64 / 80)
    assert batch.offsets.abs().sum() == 0 and not batch.flipped.any()
    # the image that could not be read is reported, not silently gone
    assert batch.report.count("image_missing", "dropped-image") == 1


def test_captions_are_encode_captions_of_the_flat_targets(dataset):
    tok = tokenizer()
    batch = RegionCollator(tok, max_tokens=3)([dataset[0], dataset[1]])
    flat = ["a white square", "a red square", "the whole dark picture", "a white square", "", ""]
    ref = encode_captions(tok, flat, max_tokens=3)
    assert torch.equal(batch.captions.input_ids, ref.input_ids)
    assert torch.equal(batch.captions.attention_mask, ref.attention_mask)
    labels = ref.labels.clone()
    labels[4:] = IGNORE_INDEX  # padded region rows are never trained
    assert torch.equal(batch.captions.labels, labels)
    assert batch.captions.input_ids.shape[1] == 4  # 3 tokens + EOS ("the whole dark picture" is cut)


def test_boxes_map_back_to_the_original_image(dataset):
    batch = RegionCollator(tokenizer())([dataset[0], dataset[1]])
    back = batch.boxes_to_original()
    np.testing.assert_allclose(back[0], [[10, 20, 30, 40], [50, 5, 70, 25], [0, 0, 80, 60]], atol=1e-4)
    assert back[1].shape == (1, 4)


def test_prompts_follow_the_segmenter_contract(dataset):
    batch = RegionCollator(tokenizer())([dataset[0], dataset[1]])
    prompts = batch.prompts()  # imports the segmenter package (slow first import, shared by the session)
    assert prompts.boxes.shape == (2, 3, 4) and prompts.num_regions == 3 and prompts.batch_size == 2


def test_to_moves_tensors_and_keeps_the_rest(dataset):
    batch = RegionCollator(tokenizer())([dataset[0]]).to("cpu")
    assert batch.captions.labels.device.type == "cpu" and batch.image_ids == ["three"]


def test_all_bad_gives_an_empty_batch_with_its_report(dataset):
    batch = RegionCollator(tokenizer())([dataset[2]])
    assert len(batch) == 0 and batch.captions is None and batch.report.count(action="dropped-image") == 1
    with pytest.raises(TypeError, match="Sample / BadSample"):
        RegionCollator(tokenizer())([{"not": "a sample"}])


def test_loader_batches_are_the_same_with_and_without_workers(tmp_path):
    write_png(tmp_path / "a.png", scene())
    recs = [scene_record(f"im{i}", "a.png") for i in range(6)]
    ds = RegionDataset(recs, tmp_path, train=True, transform=TransformConfig(image_size=S), regions_per_image=1)
    runs = []
    for workers in (0, 2):
        loader = make_loader(ds, RegionCollator(tokenizer()), batch_size=3, shuffle=True, num_workers=workers, seed=7)
        runs.append([(b.image_ids, b.boxes, b.targets) for b in loader])
    for (ids_a, boxes_a, t_a), (ids_b, boxes_b, t_b) in zip(*runs, strict=True):
        assert ids_a == ids_b and torch.equal(boxes_a, boxes_b) and t_a == t_b
    report = DataReport()
    for b in make_loader(ds, RegionCollator(tokenizer()), batch_size=3, shuffle=False, num_workers=0):
        report.merge(b.report)
    assert not report
