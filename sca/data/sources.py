"""Where each dataset is served today, with sizes and checksums where they are known.

Researched from the datasets' own pages and the repositories that use them (see each entry's
``provenance``); no dataset site was reachable while this was written, so URLs marked "unverified"
come from one public source and were not fetched by us. Nobody publishes checksums for these
datasets except as noted: "community md5" means the same md5 is recorded by several independent
projects (for COCO's annotation zip it equals the file's S3 ETag), "size seen" means a byte count
recorded by a third-party download script. Everything ``sca download`` fetches is also recorded with
its sha256 in ``<root>/.sca-download.json``, so later copies can be checked against the first.

Status: "alive" (reported working in 2025-2026), "unverified" (one source, not checked), "dead" (the
only known URL stopped working; use ``--from DIR`` with your copy or ``--mirror URL``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PARTS", "SOURCES", "STATUSES", "RemoteFile", "Source", "get_source"]

PARTS = ("annotations", "images")
STATUSES = ("alive", "unverified", "dead")


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch.

    filename: where it goes, relative to the dataset root (may include folders).
    extract_to: for archives, the folder (relative to root, "" = root) to unpack into; None = no archive.
    provides: paths (relative to root) that exist once the file is fetched and unpacked; when all of
        them exist the file is skipped, and ``--from DIR`` may supply them instead of the file.
    size (bytes), md5, sha256: what the file is checked against; None where unknown.
    provenance: where the URL, size and checksum come from.
    """

    filename: str
    url: str
    part: str = "annotations"
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    provenance: str = "no checksum or size published"
    extract_to: str | None = None
    provides: tuple[str, ...] = ()
    status: str = "alive"

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"RemoteFile {self.filename}: part {self.part!r} is not one of {PARTS}")
        if self.status not in STATUSES:
            raise ValueError(f"RemoteFile {self.filename}: status {self.status!r} is not one of {STATUSES}")

    @property
    def checksum(self) -> str:
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return "unpublished"


@dataclass(frozen=True)
class Source:
    name: str
    summary: str
    files: tuple[RemoteFile, ...]
    notes: str = ""


_VG = "https://homes.cs.washington.edu/~ranjay/visualgenome/data/dataset"  # visualgenome.org is gone
_VG_IMAGES = "https://cs.stanford.edu/people/rak248/VG_100K_2"
_VG_SIZES = "size seen by a third-party download script (2025); no checksum published"
_COCO = "http://images.cocodataset.org"
_COCO_MD5 = "community md5 (PaddleDetection, mlperf, torchvision-R, ...); not on cocodataset.org"
_O365 = "https://dorc.ks3-cn-beijing.ksyun.com/data-set/2020Objects365%E6%95%B0%E6%8D%AE%E9%9B%86"
_O365_PROV = "URL from ultralytics' and mmdetection's Objects365 v2 scripts; no checksum or size published"
_V3DET = "https://huggingface.co/datasets/yhcao/V3Det_Backup/resolve/main"
_REFER = "https://web.archive.org/web"  # bvisionweb1.cs.unc.edu is down; the Wayback copies work
_REFER_PROV = "Wayback Machine copy of the refer toolkit's zip (lichengunc/refer#14, #26); no checksum"

_TRAIN2014 = RemoteFile(
    "train2014.zip", f"{_COCO}/zips/train2014.zip", "images", size=13_510_573_713,
    md5="0da8cfa0e090c266b78f30e2d2874f1a", provenance=_COCO_MD5, extract_to="", provides=("train2014",))


def _refer_zip(dataset: str, stamp: str, provides: tuple[str, ...]) -> RemoteFile:
    return RemoteFile(f"{dataset}.zip", f"{_REFER}/{stamp}/https://bvisionweb1.cs.unc.edu/licheng/referit/data/"
                      f"{dataset}.zip", provenance=_REFER_PROV, extract_to="", provides=provides)


def _o365_patches() -> tuple[RemoteFile, ...]:
    train = [RemoteFile(f"train/patch{i}.tar.gz", f"{_O365}/train/patch{i}.tar.gz", "images",
                        provenance=_O365_PROV, extract_to="train", provides=(f"train/patch{i}",)) for i in range(51)]
    val = [RemoteFile(f"val/patch{i}.tar.gz", f"{_O365}/val/images/{'v1' if i < 16 else 'v2'}/patch{i}.tar.gz",
                      "images", provenance=_O365_PROV, extract_to="val", provides=(f"val/patch{i}",))
           for i in range(44)]
    return (*train, *val)


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("vg", "Visual Genome v1.2 region descriptions + image metadata, DenseCap split, images", (
        RemoteFile("region_descriptions.json.zip", f"{_VG}/region_descriptions.json.zip", size=127_377_968,
                   provenance=_VG_SIZES, extract_to="", provides=("region_descriptions.json",)),
        RemoteFile("image_data.json.zip", f"{_VG}/image_data.json.zip", size=1_780_854, provenance=_VG_SIZES,
                   extract_to="", provides=("image_data.json",)),
        RemoteFile("densecap_splits.json",
                   "https://raw.githubusercontent.com/jcjohnson/densecap/master/info/densecap_splits.json",
                   provenance="DenseCap's repository (info/); no checksum or size published"),
        RemoteFile("images.zip", f"{_VG_IMAGES}/images.zip", "images", size=9_731_705_982, provenance=_VG_SIZES,
                   extract_to="", provides=("VG_100K",)),
        RemoteFile("images2.zip", f"{_VG_IMAGES}/images2.zip", "images", size=5_471_658_058, provenance=_VG_SIZES,
                   extract_to="", provides=("VG_100K_2",)),
    ), "The old visualgenome.org / UW URLs are dead; these are the ones the HF visual_genome loader uses."),
    Source("vg-grit", "GRiT's preprocessed VG annotations (COCO-style train.json / test.json)", tuple(
        RemoteFile(f"{s}.json", f"https://datarelease.blob.core.windows.net/grit/VG_preprocessed_annotations/{s}.json",
                   provenance="GRiT's datasets/DATASETS.md; unreachable since 2024 (groundingLMM#59)", status="dead")
        for s in ("train", "test")), "Images: those of `vg` (same root). No public mirror of GRiT's files is "
        "known: use --from DIR with your copy, or --mirror URL."),
    Source("vg-glamm", "GLaMM's VG-sub test file (one region per image)", (
        RemoteFile("test_caption.json",
                   "https://drive.google.com/uc?export=download&id=1zF3UGHU1rvgTujinqJ-hZtrCBVsfsuel",
                   provenance="Google Drive link from GLaMM's docs/datasets.md (groundingLMM#14); no checksum",
                   status="unverified"),
    ), "Images: those of `vg` (same root). Google Drive may answer with an HTML page; then download it in a "
       "browser and pass --from DIR."),
    Source("coco", "COCO 2017 instances and images", (
        RemoteFile("annotations_trainval2017.zip", f"{_COCO}/annotations/annotations_trainval2017.zip",
                   size=252_907_541, md5="f4bbac642086de4f52a3fdda2de5fa2c", provenance=_COCO_MD5, extract_to="",
                   provides=("annotations/instances_train2017.json", "annotations/instances_val2017.json")),
        RemoteFile("train2017.zip", f"{_COCO}/zips/train2017.zip", "images", size=19_336_861_798,
                   md5="cced6f7f71b7629ddf16f17bbcfab6b2", provenance=_COCO_MD5, extract_to="", provides=("train2017",)),
        RemoteFile("val2017.zip", f"{_COCO}/zips/val2017.zip", "images", size=815_585_330,
                   md5="442b8da7639aecaf257c1dceb8ba8c80", provenance=_COCO_MD5, extract_to="", provides=("val2017",)),
    )),
    Source("o365", "Objects365 v2 annotations and image patches (51 train, 44 val)", (
        RemoteFile("annotations/zhiyuan_objv2_train.tar.gz", f"{_O365}/train/zhiyuan_objv2_train.tar.gz",
                   provenance=_O365_PROV, extract_to="annotations", provides=("annotations/zhiyuan_objv2_train.json",)),
        RemoteFile("annotations/zhiyuan_objv2_val.json", f"{_O365}/val/zhiyuan_objv2_val.json", provenance=_O365_PROV),
        *_o365_patches(),
    ), "The reference code's objects365v2_train_fixann.json is an internal copy; the reader accepts it too."),
    Source("v3det", "V3Det 2023 v1 annotations (and image zips of the authors' HF backup)", (
        RemoteFile("annotations/v3det_2023_v1_train.json", f"{_V3DET}/v3det_2023_v1_train.json",
                   provenance="yhcao/V3Det_Backup on Hugging Face (seen in a public script); no checksum"),
        RemoteFile("annotations/v3det_2023_v1_val.json", f"{_V3DET}/v3det_2023_v1_val.json",
                   provenance="same repository, path by analogy with the train file", status="unverified"),
        *(RemoteFile(f"zips/{i:05d}.zip", f"{_V3DET}/zips/{i:05d}.zip", "images", extract_to="",
                     provenance="yhcao/V3Det_Backup zips/ (seen in a public script); layout unverified",
                     status="unverified") for i in range(21)),
    ), "Official: v3det.openxlab.org.cn (login) plus V3Det's v3det_image_download.py crawler (Flickr URLs)."),
    Source("refcoco", "RefCOCO refs(unc).p / refs(google).p + instances.json, COCO train2014 images", (
        _refer_zip("refcoco", "20220413011718", ("refcoco/instances.json", "refcoco/refs(unc).p")), _TRAIN2014)),
    Source("refcoco+", "RefCOCO+ refs(unc).p + instances.json, COCO train2014 images", (
        _refer_zip("refcoco+", "20220413011656", ("refcoco+/instances.json", "refcoco+/refs(unc).p")), _TRAIN2014)),
    Source("refcocog", "RefCOCOg refs(umd).p / refs(google).p + instances.json, COCO train2014 images", (
        _refer_zip("refcocog", "20220413012904", ("refcocog/instances.json", "refcocog/refs(umd).p")), _TRAIN2014)),
]}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise KeyError(f"unknown download source {name!r}; known: {list(SOURCES)}")
    return SOURCES[name]
