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

__all__ = ["PARTS", "SOURCES", "STATUSES", "RemoteFile", "Source", "accepted_paths", "get_source", "source_splits"]

PARTS = ("annotations", "images")
STATUSES = ("alive", "unverified", "dead")


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch.

    filename: where it goes, relative to the dataset root (may include folders).
    extract_to: for archives, the folder (relative to root, "" = root) to unpack into; None = no archive.
    provides: paths (relative to root) that exist once the file is fetched and unpacked; when all of
        them exist the file is skipped, and ``--from DIR`` may supply them instead of the file.
    optional: provided paths that copies sometimes lack (linked from ``--from`` when there, reported
        when not; a reader that needs one names it).
    alternates: other layouts of the same content that the readers accept in root (each a tuple of
        paths like ``provides``; for a plain file, other places or names of it): when one of them is
        complete the file counts as present, and ``--from`` may supply it.
    split: the dataset split that needs this file (None: every split); ``--split`` / a data item's
        ``splits`` fetch only what their splits need.
    per_split: (provided path, split) pairs for an archive that serves several splits: a copy made
        for some splits only needs their paths.
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
    optional: tuple[str, ...] = ()
    alternates: tuple[tuple[str, ...], ...] = ()
    split: str | None = None
    per_split: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"RemoteFile {self.filename}: part {self.part!r} is not one of {PARTS}")
        if self.status not in STATUSES:
            raise ValueError(f"RemoteFile {self.filename}: status {self.status!r} is not one of {STATUSES}")

    def layouts(self, splits: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], ...]:
        """Every accepted layout of this file's content, each the paths it needs (for ``splits``, or
        all): its own (``provides``, or the file itself when nothing is unpacked), then the alternates."""
        skip = {p for p, s in self.per_split if splits is not None and s not in splits}
        own = tuple(p for p in self.provides if p not in self.optional and p not in skip) or (self.filename,)
        return (own, *(tuple(p for p in alt if p not in skip) for alt in self.alternates))

    @property
    def checksum(self) -> str:
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return "unpublished"


@dataclass(frozen=True)
class Source:
    """A dataset's files. layouts: how copies that ``--from DIR`` accepts are laid out (for messages
    and the README); the files are also found by name anywhere under DIR when that is unambiguous."""

    name: str
    summary: str
    files: tuple[RemoteFile, ...]
    notes: str = ""
    layouts: tuple[str, ...] = ()


def source_splits(source: Source) -> list[str]:
    """The splits some file of ``source`` is specific to (empty: every file serves every split)."""
    return sorted({f.split for f in source.files if f.split})


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
    md5="0da8cfa0e090c266b78f30e2d2874f1a", provenance=_COCO_MD5, extract_to="", provides=("train2014",),
    alternates=(("images/mscoco/images/train2014",),))  # the refer toolkit's data/ folder


def _refer_zip(dataset: str, stamp: str, split_bys: tuple[str, ...]) -> RemoteFile:
    refs = tuple(f"{dataset}/refs({s}).p" for s in split_bys)
    return RemoteFile(f"{dataset}.zip", f"{_REFER}/{stamp}/https://bvisionweb1.cs.unc.edu/licheng/referit/data/"
                      f"{dataset}.zip", provenance=_REFER_PROV, extract_to="",
                      provides=(f"{dataset}/instances.json", *refs), optional=refs[1:])


def _o365_patches() -> tuple[RemoteFile, ...]:
    # Where the server keeps a patch is where it lands under root (the dataset's own tree): train patches
    # at train/patchN.tar.gz, val patches at val/images/v1|v2/patchN.tar.gz (patches 0-15 hold v1 images).
    # Each unpacks to a patchN/ folder; mmdetection's layout keeps every patch under {split}/patchN/,
    # and some copies keep the annotation files' own images/vK/patchN/ under the split folder. The
    # reader finds each patch in any of these (sca.data.readers.coco.read_o365).
    files = []
    for split, count in (("train", 51), ("val", 44)):
        for i in range(count):
            ver = "v1" if i < 16 else "v2"
            where = f"{split}/images/{ver}" if split == "val" else split
            other = f"{split}/images/{ver}" if split == "train" else split
            files.append(RemoteFile(
                f"{where}/patch{i}.tar.gz", f"{_O365}/{where}/patch{i}.tar.gz", "images", provenance=_O365_PROV,
                extract_to=where, provides=(f"{where}/patch{i}",), alternates=((f"{other}/patch{i}",),), split=split))
    return tuple(files)


def _o365_annotation(split: str) -> RemoteFile:
    own = f"zhiyuan_objv2_{split}.json"
    # the reference code's renamed copies: objects365v2_train_fixann.json, objects365v2_val.json
    renamed = [f"objects365v2_{split}_fixann.json"] if split == "train" else []
    renamed.append(f"objects365v2_{split}.json")
    alternates = tuple((f"{folder}{name}",) for name in (own, *renamed) for folder in ("annotations/", "", f"{split}/")
                       if f"{folder}{name}" != f"annotations/{own}")
    if split == "train":  # served as a tarball holding the json
        return RemoteFile(f"annotations/zhiyuan_objv2_{split}.tar.gz", f"{_O365}/train/zhiyuan_objv2_train.tar.gz",
                          provenance=_O365_PROV, extract_to="annotations", provides=(f"annotations/{own}",),
                          alternates=alternates, split=split)
    return RemoteFile(f"annotations/{own}", f"{_O365}/val/{own}", provenance=_O365_PROV, alternates=alternates,
                      split=split)


def _in_annotations(name: str) -> tuple[tuple[str, ...], ...]:
    """The reference code keeps VG's json files in an annotations/ folder beside the image folders."""
    return ((f"annotations/{name}",),)


_VG_LAYOUTS = (
    "the official files unpacked: region_descriptions.json, image_data.json, densecap_splits.json, VG_100K/, "
    "VG_100K_2/ in one folder",
    "the reference code's: annotations/{region_descriptions,image_data,densecap_splits}.json beside VG_100K/ "
    "and VG_100K_2/",
    "the archives themselves (region_descriptions.json.zip, image_data.json.zip, images.zip, images2.zip)",
)
_DET_LAYOUT = "any folder where each file or folder name occurs once (found by name, up to 5 levels deep)"
_REFER_LAYOUTS = (
    "the refer toolkit's data/ folder: refcoco/, refcoco+/, refcocog/ (instances.json, refs(*).p) and "
    "images/mscoco/images/train2014/",
    "the reference code's: refcoco.zip, refcoco+.zip, refcocog.zip and train2014.zip in one folder",
    "unpacked beside a train2014/ folder of COCO 2014 train images",
)


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("vg", "Visual Genome v1.2 region descriptions + image metadata, DenseCap split, images", (
        RemoteFile("region_descriptions.json.zip", f"{_VG}/region_descriptions.json.zip", size=127_377_968,
                   provenance=_VG_SIZES, extract_to="", provides=("region_descriptions.json",),
                   alternates=_in_annotations("region_descriptions.json")),
        RemoteFile("image_data.json.zip", f"{_VG}/image_data.json.zip", size=1_780_854, provenance=_VG_SIZES,
                   extract_to="", provides=("image_data.json",), alternates=_in_annotations("image_data.json")),
        RemoteFile("densecap_splits.json",
                   "https://raw.githubusercontent.com/jcjohnson/densecap/master/info/densecap_splits.json",
                   provenance="DenseCap's repository (info/); no checksum or size published",
                   alternates=_in_annotations("densecap_splits.json")),
        RemoteFile("images.zip", f"{_VG_IMAGES}/images.zip", "images", size=9_731_705_982, provenance=_VG_SIZES,
                   extract_to="", provides=("VG_100K",)),
        RemoteFile("images2.zip", f"{_VG_IMAGES}/images2.zip", "images", size=5_471_658_058, provenance=_VG_SIZES,
                   extract_to="", provides=("VG_100K_2",)),
    ), "The old visualgenome.org / UW URLs are dead; these are the ones the HF visual_genome loader uses.",
        _VG_LAYOUTS),
    Source("vg-grit", "GRiT's preprocessed VG annotations (COCO-style train.json / test.json)", tuple(
        RemoteFile(f"{s}.json", f"https://datarelease.blob.core.windows.net/grit/VG_preprocessed_annotations/{s}.json",
                   provenance="GRiT's datasets/DATASETS.md; unreachable since 2024 (groundingLMM#59)", status="dead",
                   alternates=_in_annotations(f"{s}.json"), split=s)
        for s in ("train", "test")), "Images: those of `vg` (same root). No public mirror of GRiT's files is "
        "known: put your copy in the root (or its annotations/ folder), or use --from DIR or --mirror URL.",
        ("train.json and test.json in one folder, or in the reference code's annotations/ folder",)),
    Source("vg-glamm", "GLaMM's VG-sub test file (one region per image)", (
        RemoteFile("test_caption.json",
                   "https://drive.google.com/uc?export=download&id=1zF3UGHU1rvgTujinqJ-hZtrCBVsfsuel",
                   provenance="Google Drive link from GLaMM's docs/datasets.md (groundingLMM#14); no checksum",
                   status="unverified", alternates=_in_annotations("test_caption.json")),
    ), "Images: those of `vg` (same root). Google Drive may answer with an HTML page; then download it in a "
       "browser and pass --from DIR.", ("test_caption.json anywhere under DIR (GLaMM keeps it in "
                                        "GranDf/annotations/eval/ or vg/)",)),
    Source("coco", "COCO 2017 instances and images", (
        RemoteFile("annotations_trainval2017.zip", f"{_COCO}/annotations/annotations_trainval2017.zip",
                   size=252_907_541, md5="f4bbac642086de4f52a3fdda2de5fa2c", provenance=_COCO_MD5, extract_to="",
                   provides=("annotations/instances_train2017.json", "annotations/instances_val2017.json"),
                   alternates=(("instances_train2017.json", "instances_val2017.json"),),
                   per_split=tuple((f"{folder}instances_{s}2017.json", s) for s in ("train", "val")
                                   for folder in ("annotations/", ""))),
        RemoteFile("train2017.zip", f"{_COCO}/zips/train2017.zip", "images", size=19_336_861_798,
                   md5="cced6f7f71b7629ddf16f17bbcfab6b2", provenance=_COCO_MD5, extract_to="", provides=("train2017",),
                   split="train"),
        RemoteFile("val2017.zip", f"{_COCO}/zips/val2017.zip", "images", size=815_585_330,
                   md5="442b8da7639aecaf257c1dceb8ba8c80", provenance=_COCO_MD5, extract_to="", provides=("val2017",),
                   split="val"),
    ), layouts=("the official zips unpacked: annotations/instances_{train,val}2017.json, train2017/, val2017/",
                "the zips themselves", _DET_LAYOUT)),
    Source("o365", "Objects365 v2 annotations and image patches (51 train, 44 val)", (
        _o365_annotation("train"), _o365_annotation("val"), *_o365_patches(),
    ), "The reference code's objects365v2_train_fixann.json is an internal copy; the reader accepts it too.",
        ("the official tree: train/zhiyuan_objv2_train.json (or .tar.gz), train/patchN/, "
         "val/zhiyuan_objv2_val.json, val/images/v1|v2/patchN/ (unpacked in place, or the .tar.gz files)",
         "mmdetection's: annotations/zhiyuan_objv2_{train,val}.json, train/patchN/, val/patchN/",
         "the reference code's: objects365v2_train_fixann.json, objects365v2_val.json, "
         "{train,val}/images/v1|v2/patchN/", _DET_LAYOUT)),
    Source("v3det", "V3Det 2023 v1 annotations (and image zips of the authors' HF backup)", (
        RemoteFile("annotations/v3det_2023_v1_train.json", f"{_V3DET}/v3det_2023_v1_train.json",
                   provenance="yhcao/V3Det_Backup on Hugging Face (seen in a public script); no checksum",
                   alternates=(("v3det_2023_v1_train.json",),), split="train"),
        RemoteFile("annotations/v3det_2023_v1_val.json", f"{_V3DET}/v3det_2023_v1_val.json",
                   provenance="same repository, path by analogy with the train file", status="unverified",
                   alternates=(("v3det_2023_v1_val.json",),), split="val"),
        *(RemoteFile(f"zips/{i:05d}.zip", f"{_V3DET}/zips/{i:05d}.zip", "images", extract_to="",
                     provenance="yhcao/V3Det_Backup zips/ (seen in a public script); layout unverified",
                     status="unverified", alternates=(("images",),)) for i in range(21)),
    ), "Official: v3det.openxlab.org.cn (login) plus V3Det's v3det_image_download.py crawler (Flickr URLs).",
        ("V3Det's own: annotations/v3det_2023_v1_{train,val}.json beside images/<synset>/", _DET_LAYOUT)),
    Source("refcoco", "RefCOCO refs(unc).p / refs(google).p + instances.json, COCO train2014 images", (
        _refer_zip("refcoco", "20220413011718", ("unc", "google")), _TRAIN2014), layouts=_REFER_LAYOUTS),
    Source("refcoco+", "RefCOCO+ refs(unc).p + instances.json, COCO train2014 images", (
        _refer_zip("refcoco+", "20220413011656", ("unc",)), _TRAIN2014), layouts=_REFER_LAYOUTS),
    Source("refcocog", "RefCOCOg refs(umd).p / refs(google).p + instances.json, COCO train2014 images", (
        _refer_zip("refcocog", "20220413012904", ("umd", "google")), _TRAIN2014), layouts=_REFER_LAYOUTS),
]}


def accepted_paths(source: str, path: str) -> list[str]:
    """Where a reader may find the file a source provides at ``path`` (relative to the dataset root):
    ``path`` itself, then its place in each of the ``alternates`` of the file that provides it."""
    for f in get_source(source).files:
        own = f.provides or (f.filename,)
        if path in own:
            i = own.index(path)
            return [path, *(alt[i] for alt in f.alternates if len(alt) == len(own) and alt[i] != path)]
    raise KeyError(f"source {source!r} provides no {path!r}")


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise KeyError(f"unknown download source {name!r}; known: {list(SOURCES)}")
    return SOURCES[name]
