"""The sources table: well-formed entries, and every readable dataset has a download source."""

import re

import pytest

from sca.data.readers import DATASETS
from sca.data.sources import SOURCES, RemoteFile, get_source


def test_every_entry_is_well_formed():
    for src in SOURCES.values():
        names = [f.filename for f in src.files]
        assert len(names) == len(set(names)), src.name
        for f in src.files:
            assert re.match(r"https?://[^/]+/", f.url), f.url
            assert f.md5 is None or re.fullmatch(r"[0-9a-f]{32}", f.md5)
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
            assert f.provenance and (f.size is None or f.size > 0)
            assert f.extract_to is None or f.filename.endswith((".zip", ".tar.gz", ".tgz", ".tar"))
    assert get_source("coco").files[0].checksum == "md5:f4bbac642086de4f52a3fdda2de5fa2c"
    assert {f.status for f in get_source("vg-grit").files} == {"dead"}
    assert len([f for f in get_source("o365").files if f.part == "images"]) == 51 + 44


def test_datasets_point_at_sources_and_errors_are_clear():
    assert {spec.download for spec in DATASETS.values()} <= set(SOURCES)
    with pytest.raises(KeyError, match="unknown download source 'imagenet'; known: \\['vg'"):
        get_source("imagenet")
    with pytest.raises(ValueError, match="part 'masks' is not one of"):
        RemoteFile("x.json", "https://example.org/x.json", part="masks")
