"""``sca caption`` / ``sca everything`` / ``sca demo`` on the tiny checkpoint, in-process."""

import json

import numpy as np
import pytest
from PIL import Image

from sca.app.arguments import cuda_device_count
from sca.cli import build_parser, main
from sca.data.masks import rle_decode

FAST = ["--num-beams", "1", "--max-new-tokens", "3", "--no-progress"]


def test_caption_boxes_and_clicks_to_json_and_overlay(tiny_checkpoint, photo, tmp_path, capsys, captioner):
    overlay = tmp_path / "out" / "overlay.png"
    code = main(["caption", str(photo), "--checkpoint", str(tiny_checkpoint), "--box", "4", "6", "40", "30",
                 "--box", "50", "35", "90", "60", "--point", "20", "20", "--point", "30", "25",
                 "--neg-point", "70", "50", "--overlay", str(overlay), *FAST])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["width"], out["height"], out["task"]) == (96, 64, "caption")
    regions = out["regions"]
    assert [r["id"] for r in regions] == [1, 2, 3]
    assert regions[0]["box"] == [4, 6, 40, 30] and regions[1]["box"] == [50, 35, 90, 60]
    assert regions[2]["points"] == [[20, 20], [30, 25], [70, 50]] and regions[2]["point_labels"] == [1, 1, 0]
    # The same as the Python API with the same prompts.
    api = captioner.caption(photo, boxes=[[4, 6, 40, 30], [50, 35, 90, 60]], num_beams=1, max_new_tokens=3)
    api += captioner.caption(photo, points=[[[20, 20], [30, 25], [70, 50]]], point_labels=[[1, 1, 0]],
                             num_beams=1, max_new_tokens=3)
    for r, a in zip(regions, api, strict=True):
        assert r["caption"] == a.caption and np.array_equal(rle_decode(r["mask"]), a.mask)
    picture = Image.open(overlay)
    assert picture.size == (96, 64)
    # The masks are drawn: pixels inside region 1's mask differ from the photo.
    changed = np.any(np.asarray(picture.convert("RGB")) != np.asarray(Image.open(photo).convert("RGB")), axis=2)
    assert changed[api[0].mask].mean() > 0.9


def test_each_point_output_file_and_recognition(tiny_checkpoint, photo, tmp_path, capsys):
    target = tmp_path / "r.json"
    assert main(["caption", str(photo), "--checkpoint", str(tiny_checkpoint), "--point", "10", "10",
                 "--point", "80", "50", "--each-point", "--task", "recognition", "--masks", "none",
                 "--output", str(target), *FAST]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "Loading weights" not in captured.err and "captioning" not in captured.err
    out = json.loads(target.read_text())
    assert [r["points"] for r in out["regions"]] == [[[10, 10]], [[80, 50]]]
    assert all(r["task"] == "recognition" and "mask" not in r for r in out["regions"])


@pytest.mark.parametrize(("args", "message"), [
    (["--box", "40", "6", "4", "30"], r"box 0 \[40.0, 6.0, 4.0, 30.0\] is inverted"),
    (["--box", "0", "0", "97", "30"], "lies outside the 96x64 image"),
    (["--point", "-3", "5"], r"point \(-3.0, 5.0\) of region 0 lies outside"),
    ([], "no prompts: give --box"),
    (["--neg-point", "3", "5"], "--neg-point needs at least one --point"),
    (["--point", "3", "5", "--neg-point", "4", "4", "--each-point"], "cannot take --neg-point"),
])
def test_bad_prompts_fail_before_loading_the_model(args, message, photo, tmp_path, capsys):
    # The checkpoint does not exist: prompt errors must come first (and fast).
    assert main(["caption", str(photo), "--checkpoint", str(tmp_path / "none"), *args, *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sca caption: error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_bad_files_and_missing_checkpoints(tiny_checkpoint, photo, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    cases = [
        (["caption", str(tmp_path / "nope.png"), "--checkpoint", str(tiny_checkpoint), "--box", "0", "0", "5", "5"],
         "image_missing: " + str(tmp_path / "nope.png")),
        (["caption", str(bad), "--checkpoint", str(tiny_checkpoint), "--box", "0", "0", "5", "5"],
         "image_corrupt: " + str(bad)),
        (["caption", str(photo), "--checkpoint", str(tmp_path / "no-ckpt"), "--box", "0", "0", "5", "5"],
         "no such folder, and not a hub id"),
        (["everything", str(photo), "--checkpoint", str(tiny_checkpoint), "--points-per-side", "0"],
         "--points-per-side must be >= 1, got 0"),
    ]
    for argv, message in cases:
        assert main([*argv, *FAST]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_everything_command(tiny_checkpoint, photo, tmp_path, capsys):
    overlay = tmp_path / "every.png"
    assert main(["everything", str(photo), "--checkpoint", str(tiny_checkpoint), "--points-per-side", "3",
                 "--pred-iou-thresh", "-1", "--stability-score-thresh", "0", "--max-regions", "4",
                 "--overlay", str(overlay), *FAST]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["anything"]["points_per_side"] == 3 and out["anything"]["max_regions"] == 4
    assert 1 <= len(out["regions"]) <= 4
    for r in out["regions"]:
        assert r["box"] == r["mask_box"] and len(r["points"]) == 1 and "stability_score" in r
        assert rle_decode(r["mask"]).sum() == r["area"] > 0
    assert Image.open(overlay).size == (96, 64)


def test_progress_goes_to_stderr(tiny_checkpoint, photo, capsys):
    assert main(["caption", str(photo), "--checkpoint", str(tiny_checkpoint), "--box", "0", "0", "9", "9",
                 "--num-beams", "1", "--max-new-tokens", "2"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["regions"][0]["box"] == [0, 0, 9, 9]
    assert f"loading checkpoint {tiny_checkpoint} ..." in captured.err and "checkpoint loaded in" in captured.err
    assert "encoding the 96x64 image" in captured.err and "captioning" in captured.err


def test_demo_command_is_registered_with_loopback_default():
    args = build_parser().parse_args(["demo", "--checkpoint", "x"])
    assert (args.host, args.port) == ("127.0.0.1", 7860) and args.func.__name__ == "run_demo"


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a command gets as far as loading a checkpoint."""
    from sca.app.api import Captioner

    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the arguments were checked")

    monkeypatch.setattr(Captioner, "from_pretrained", refuse)


def _truncated_png(photo, tmp_path):
    data = photo.read_bytes()
    target = tmp_path / "truncated.png"
    target.write_bytes(data[: len(data) // 2])
    return target


@pytest.mark.parametrize("command", ["caption", "everything"])
def test_every_argument_is_checked_before_the_model_loads(command, tiny_checkpoint, photo, tmp_path, capsys,
                                                         no_model_load):
    (tmp_path / "folder").mkdir()
    prompt = ["--box", "0", "0", "9", "9"] if command == "caption" else []
    cases = [
        (["--device", "cuda"], "--device 'cuda': no CUDA device on this machine; use --device cpu"),
        (["--device", "cuda:7x"], "--device 'cuda:7x' is not a device; use cpu, cuda, cuda:N"),
        (["--output", str(tmp_path / "folder")], f"--output {str(tmp_path / 'folder')!r} is a folder"),
        (["--output", str(photo)], "is the input image"),
        (["--overlay", str(tmp_path / "folder")], "is a folder"),
        (["--overlay", str(tmp_path / "o.json")], "cannot write a picture with extension '.json'"),
        (["--output", str(tmp_path / "x.png"), "--overlay", str(tmp_path / "x.png")], "are the same file"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    ]
    if command == "everything":
        cases += [(["--points-per-batch", "0"], "--points-per-batch must be >= 1, got 0"),
                  (["--stability-score-offset", "-1"], "--stability-score-offset must be >= 0, got -1.0"),
                  (["--max-regions", "0"], "--max-regions must be >= 1, got 0")]
    for extra, message in cases:
        if "cuda" in extra and cuda_device_count():
            continue  # a machine with CUDA: nothing to reject
        argv = [command, str(photo), "--checkpoint", str(tiny_checkpoint), *prompt, *FAST, *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith(f"sca {command}: error: ") and len(err.strip().splitlines()) == 1, err
        assert message in err, err
    truncated = _truncated_png(photo, tmp_path)
    assert main([command, str(truncated), "--checkpoint", str(tiny_checkpoint), *prompt, *FAST]) == 2
    err = capsys.readouterr().err
    assert f"image_corrupt: {truncated}: " in err and len(err.strip().splitlines()) == 1, err


def test_output_in_a_new_folder_is_fine(tiny_checkpoint, photo, tmp_path):
    target = tmp_path / "new" / "deeper" / "r.json"
    assert main(["caption", str(photo), "--checkpoint", str(tiny_checkpoint), "--box", "0", "0", "9", "9",
                 "--output", str(target), *FAST]) == 0
    assert json.loads(target.read_text())["regions"][0]["box"] == [0, 0, 9, 9]


def test_demo_arguments_are_checked_before_the_model_loads(tiny_checkpoint, tmp_path, capsys, no_model_load):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [
            (["--port", str(port)], f"--port {port}: the port is in use on 127.0.0.1"),
            (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' is not a known host"),
            (["--stability-score-thresh", "1.5"], "--stability-score-thresh must be in [0, 1], got 1.5"),
            (["--max-regions", "500"], "--max-regions must be in [1, 128], got 500"),
            (["--num-beams", "0"], "--num-beams must be >= 1, got 0"),
            (["--checkpoint", str(tmp_path)], "is neither a checkpoint folder"),
        ]
        for extra, message in cases:
            assert main(["demo", "--checkpoint", str(tiny_checkpoint), *extra]) == 2, extra
            err = capsys.readouterr().err
            assert err.startswith("sca demo: error: ") and message in err and len(err.splitlines()) == 1, err
