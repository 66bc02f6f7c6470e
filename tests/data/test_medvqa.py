"""Tests for the offline medical VQA benchmark and the VQA-RAD / SLAKE / PathVQA folder loader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfmaccel.data.medvqa import (
    QUESTION_TYPES,
    VQASample,
    load_medvqa,
    load_vqa_folder,
    majority_baseline,
)
from mfmaccel.data.medvqa.build import generate_sample, question_plan
from mfmaccel.data.medvqa.questions import ANSWER_SETS
from mfmaccel.data.medvqa.sources import SOURCE_BY_ID, SOURCES
from mfmaccel.errors import UserInputError

FIXTURE = Path(__file__).parent.parent / "fixtures" / "vqa_rad_tiny"
PER_SOURCE = 40


@pytest.fixture(scope="module")
def train() -> list[VQASample]:
    return load_medvqa("train", seed=0, per_source=PER_SOURCE)


@pytest.fixture(scope="module")
def test() -> list[VQASample]:
    return load_medvqa("test", seed=0, per_source=PER_SOURCE)


def _pixels(sample: VQASample) -> np.ndarray:
    return np.asarray(sample.image)


# ---------------------------------------------------------------- the offline benchmark


def test_unknown_split_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown medvqa split 'dev'.*train, val, test"):
        load_medvqa("dev")


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"per_source": 0}])
def test_bad_build_arguments_are_user_errors(kwargs: dict) -> None:
    with pytest.raises(UserInputError):
        load_medvqa("test", **kwargs)


def test_same_seed_gives_identical_samples_and_other_seed_differs() -> None:
    first = load_medvqa("val", seed=3, per_source=4)
    again = load_medvqa("val", seed=3, per_source=4)
    other = load_medvqa("val", seed=4, per_source=4)
    assert [(s.source_id, s.question, s.answer) for s in first] == [
        (s.source_id, s.question, s.answer) for s in again
    ]
    assert all(np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(first, again, strict=True))
    seen = {_pixels(s).tobytes() for s in first}
    assert not any(_pixels(s).tobytes() in seen for s in other)  # no image repeats across seeds
    assert [(s.source_id, s.answer) for s in first] != [(s.source_id, s.answer) for s in other]


def test_samples_are_well_formed(train: list[VQASample], test: list[VQASample]) -> None:
    for sample in train + test:
        assert sample.image.mode == "RGB" and sample.image.size == (224, 224)
        assert sample.question_type in QUESTION_TYPES
        assert sample.answer in sample.answer_set
        assert sample.answer_set == ANSWER_SETS[sample.question_type]
        assert sample.answer == sample.answer.lower()
        spec = SOURCE_BY_ID[sample.source_id]
        if sample.question_type == "modality":
            assert sample.answer == spec.modality
        if sample.question_type == "organ":
            assert sample.answer == spec.organ
    assert {s.split for s in train} == {"train"} and {s.split for s in test} == {"test"}


def test_default_sizes_roughly_as_documented() -> None:
    from mfmaccel.data.medvqa.build import default_per_source, samples_for
    from mfmaccel.data.medvqa.sources import sources_for_split

    sizes = {}
    for split in ("train", "val", "test"):
        per_source = default_per_source(split)
        sizes[split] = sum(samples_for(spec, per_source) for spec in sources_for_split(split))
    assert 1900 <= sizes["train"] <= 2100
    assert 280 <= sizes["val"] <= 330
    assert 480 <= sizes["test"] <= 530


def test_multi_source_modalities_keep_sources_apart(
    train: list[VQASample], test: list[VQASample]
) -> None:
    sources_per_modality = Counter(spec.modality for spec in SOURCES)
    multi = {m for m, n in sources_per_modality.items() if n > 1}
    assert {"ct", "mri", "ultrasound", "fundus photograph"} <= multi
    train_ids = {s.source_id for s in train if SOURCE_BY_ID[s.source_id].modality in multi}
    test_ids = {s.source_id for s in test if SOURCE_BY_ID[s.source_id].modality in multi}
    assert train_ids and test_ids
    assert not train_ids & test_ids
    # every multi-source modality is still present in both splits
    assert {SOURCE_BY_ID[i].modality for i in train_ids} == multi
    assert {SOURCE_BY_ID[i].modality for i in test_ids} == multi


def _lesion_indices(source_id: str, split: str, types: tuple[str, ...]) -> list[int]:
    plan = question_plan(source_id, split, seed=0, per_source=PER_SOURCE)
    return [i for i, (qtype, _) in enumerate(plan) if qtype in types]


LESION_SOURCES = [(spec.source_id, spec.splits[0]) for spec in SOURCES if spec.lesion_style]


@pytest.mark.parametrize(("source_id", "split"), LESION_SOURCES)
def test_lesion_ground_truth_matches_the_pixels(source_id: str, split: str) -> None:
    for index in _lesion_indices(source_id, split, ("presence", "location", "count"))[:5]:
        made = generate_sample(source_id, split, seed=0, index=index, per_source=PER_SOURCE)
        bare = generate_sample(source_id, split, seed=0, index=index, per_source=PER_SOURCE,
                               paint_lesions=False)
        sample, lesions = made.sample, made.lesions
        diff = np.abs(_pixels(sample).astype(int) - _pixels(bare.sample).astype(int)).max(-1)
        # the recorded answer is what the recorded lesions say
        if sample.question_type == "count":
            assert int(sample.answer) == len(lesions)
        if sample.question_type == "presence":
            assert (sample.answer == "yes") == bool(lesions)
        if sample.question_type == "location":
            assert len(lesions) == 1
            core = lesions[0].core
            ys, xs = np.nonzero(core)
            upper, left = ys < 112, xs < 112
            in_quadrant = {"upper left": upper & left, "upper right": upper & ~left,
                           "lower left": ~upper & left, "lower right": ~upper & ~left}
            assert in_quadrant[sample.answer].mean() >= 0.75
        # pixels change only where a lesion was drawn, and clearly inside each lesion
        support = np.zeros(diff.shape, dtype=bool)
        for lesion in lesions:
            support |= lesion.support
            assert diff[lesion.core].mean() >= 15, f"faint lesion in {source_id} #{index}"
            assert made.anatomy[lesion.core].mean() >= 0.95  # on the anatomy, not background
            assert 8 <= lesion.radius <= 25
        assert diff[~support].max(initial=0) == 0
        assert (diff.max() > 0) == bool(lesions)


def test_answers_are_balanced(train: list[VQASample], test: list[VQASample]) -> None:
    for samples in (train, test):
        for qtype in ("presence", "location", "count"):
            answers = Counter(s.answer for s in samples if s.question_type == qtype)
            shares = {a: answers[a] / sum(answers.values()) for a in ANSWER_SETS[qtype]}
            chance = 1 / len(ANSWER_SETS[qtype])
            assert all(abs(share - chance) <= 0.06 for share in shares.values()), (qtype, shares)


def test_majority_baseline_is_near_chance_on_lesion_questions(
    train: list[VQASample], test: list[VQASample]
) -> None:
    scores = majority_baseline(train, test)
    assert 0.4 <= scores["presence"] <= 0.6
    assert scores["count"] <= 0.35 and scores["location"] <= 0.35
    assert set(scores) == {s.question_type for s in test} | {"overall"}


def _sample(qtype: str, answer: str) -> VQASample:
    return VQASample(Image.new("RGB", (2, 2)), "q?", answer, qtype, [answer], "x", "test")


def test_majority_baseline_counts_exactly() -> None:
    train = [_sample("presence", "yes")] * 3 + [_sample("presence", "no"), _sample("count", "2")]
    test = [_sample("presence", "yes"), _sample("presence", "no"), _sample("count", "1"),
            _sample("organ", "yes")]  # organ is not in train: falls back to the overall "yes"
    scores = majority_baseline(train, test)
    assert scores == {"count": 0.0, "organ": 1.0, "presence": 0.5, "overall": 0.5}
    with pytest.raises(UserInputError):
        majority_baseline([], test)


# ---------------------------------------------------------------- loading data from disk


def test_loads_the_vqa_rad_fixture() -> None:
    samples = load_vqa_folder(FIXTURE)
    assert len(samples) == 7  # two OPEN questions dropped
    by_question = {s.question: s for s in samples}
    lesion = by_question["Is there a lesion in the liver?"]
    assert (lesion.answer, lesion.answer_set) == ("yes", ["yes", "no"])
    assert lesion.question_type == "pres"  # the file's own label, lower-cased
    modality = by_question["Is this a CT or an MRI?"]
    assert modality.answer == "ct" and modality.answer_set == ["ct", "t2"]
    assert by_question["Which lung is the nodule in?"].answer_set == ["left", "right"]
    assert all(s.image.mode == "RGB" and s.image.size == (32, 32) for s in samples)
    assert all(s.answer in s.answer_set for s in samples)
    assert lesion.source_id == "synpic100.png"
    assert [s.split for s in load_vqa_folder(FIXTURE, split="test")] == ["test"] * 3
    assert len(load_vqa_folder(FIXTURE, split="train")) == 4


def _write_slake(root: Path) -> None:
    for name in ("xmlab1", "xmlab2"):
        (root / "imgs" / name).mkdir(parents=True)
        Image.new("L", (20, 16), 90).save(root / "imgs" / name / "source.jpg")

    def rec(qid: int, img: str, question: str, answer: str, atype: str, content: str,
            lang: str = "en") -> dict:
        return {"img_id": qid, "img_name": img, "question": question, "answer": answer,
                "q_lang": lang, "location": "Abdomen", "modality": "CT",
                "answer_type": atype, "base_type": "vqa", "content_type": content, "qid": qid}

    train = [
        rec(1, "xmlab1/source.jpg", "Does the picture contain liver?", "Yes", "CLOSED", "Organ"),
        rec(2, "xmlab1/source.jpg", "图片中包含肝脏吗?", "是", "CLOSED", "Organ", lang="zh"),
        rec(3, "xmlab1/source.jpg", "Which organ is abnormal?", "Liver", "OPEN", "Abnormality"),
        rec(4, "xmlab1/source.jpg", "Is this a CT or MRI?", "CT", "CLOSED", "Modality"),
    ]
    test = [rec(5, "xmlab2/source.jpg", "Is this an MRI?", "No", "CLOSED", "Modality"),
            rec(6, "xmlab2/source.jpg", "Is this a T1 or T2 image?", "T2", "CLOSED", "Modality")]
    (root / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    (root / "test.json").write_text(json.dumps(test), encoding="utf-8")


def test_loads_a_slake_style_folder(tmp_path: Path) -> None:
    _write_slake(tmp_path)
    train = load_vqa_folder(tmp_path, split="train")
    assert [(s.question, s.answer, s.question_type) for s in train] == [
        ("Does the picture contain liver?", "yes", "organ"),
        ("Is this a CT or MRI?", "ct", "modality"),
    ]
    assert train[1].answer_set == ["ct"]
    test = load_vqa_folder(tmp_path, split="test")
    assert [s.answer for s in test] == ["no", "t2"] and test[1].answer_set == ["t2"]
    assert len(load_vqa_folder(tmp_path)) == 4
    assert load_vqa_folder(tmp_path / "test.json")[0].split == "test"


def test_loads_a_pathvqa_style_file(tmp_path: Path) -> None:
    (tmp_path / "images" / "train").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 100, 150)).save(tmp_path / "images" / "train" / "train_0001.jpg")
    records = [{"image": "train_0001", "question": "Is this a gland?", "answer": "yes"},
               {"image": "train_0001", "question": "What is present?", "answer": "fibrosis"}]
    (tmp_path / "pvqa.json").write_text(json.dumps(records))
    samples = load_vqa_folder(tmp_path)
    assert [(s.answer, s.question_type, s.answer_set, s.split) for s in samples] == [
        ("yes", "other", ["yes", "no"], "test")
    ]
    with pytest.raises(UserInputError, match="no split"):
        load_vqa_folder(tmp_path, split="train")


def _case_missing_path(root: Path) -> Path:
    return root / "nope"


def _case_no_json(root: Path) -> Path:
    (root / "images").mkdir()
    return root


def _case_malformed(root: Path) -> Path:
    (root / "data.json").write_text('[{"image_name": "a.png", "question": "Is it?"')
    return root


def _case_not_a_list(root: Path) -> Path:
    (root / "data.json").write_text('{"image_name": "a.png"}')
    return root


def _case_missing_key(root: Path) -> Path:
    good = {"image_name": "a.png", "question": "Is it?", "answer": "yes"}
    (root / "data.json").write_text(json.dumps([good, {"image_name": "a.png", "answer": "no"}]))
    Image.new("RGB", (4, 4)).save(root / "a.png")
    return root


def _case_missing_image(root: Path) -> Path:
    record = {"img_name": "xmlab9/source.jpg", "question": "Is it?", "answer": "yes"}
    (root / "data.json").write_text(json.dumps([record]))
    return root


def _case_broken_image(root: Path) -> Path:
    (root / "a.png").write_bytes(b"not a png")
    record = {"image": "a.png", "question": "Is it?", "answer": "yes"}
    (root / "data.json").write_text(json.dumps([record]))
    return root


def _case_nothing_closed(root: Path) -> Path:
    record = {"image": "a.png", "question": "What is it?", "answer": "a cell"}
    (root / "data.json").write_text(json.dumps([record]))
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_case_missing_path, "does not exist"),
        (_case_no_json, "no JSON file found"),
        (_case_malformed, "malformed JSON"),
        (_case_not_a_list, "expected a JSON list"),
        (_case_missing_key, "record 1 of data.json has no 'question' key"),
        (_case_missing_image, "image 'xmlab9/source.jpg' not found"),
        (_case_broken_image, "cannot read image"),
        (_case_nothing_closed, "no closed-ended English questions"),
    ],
)
def test_bad_folders_raise_one_line_user_errors(make, message: str, tmp_path: Path) -> None:
    path = make(tmp_path)
    with pytest.raises(UserInputError, match=message) as caught:
        load_vqa_folder(path)
    assert "\n" not in str(caught.value)


def test_unknown_folder_split_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown split 'holdout'"):
        load_vqa_folder(FIXTURE, split="holdout")
