"""Medical visual question answering data: an offline benchmark built from real medical images
shipped in installed packages (`medvqa`), a second one whose answers are all real labels
(`medvqa2`: Br35H tumour labels, DICOM header facts), and a loader for VQA-RAD / SLAKE /
PathVQA-style data on disk. See docs/data.md for the sources, their licences and how questions
and splits are made."""

from mfmaccel.data.medvqa.baseline import majority_baseline
from mfmaccel.data.medvqa.benchmarks import load_benchmark
from mfmaccel.data.medvqa.build import PlannedAnswer, load_medvqa, planned_answers
from mfmaccel.data.medvqa.captions import (
    CaptionSample,
    ImageFacts,
    load_medcaptions,
    load_medcaptions2,
)
from mfmaccel.data.medvqa.folder import load_vqa_folder
from mfmaccel.data.medvqa.realbuild import load_medvqa2, planned_answers_v2
from mfmaccel.data.medvqa.sample import QUESTION_TYPES, QUESTION_TYPES_V2, SPLITS, VQASample

__all__ = [
    "QUESTION_TYPES",
    "QUESTION_TYPES_V2",
    "CaptionSample",
    "ImageFacts",
    "PlannedAnswer",
    "SPLITS",
    "VQASample",
    "load_benchmark",
    "load_medcaptions",
    "load_medcaptions2",
    "load_medvqa",
    "load_medvqa2",
    "load_vqa_folder",
    "majority_baseline",
    "planned_answers",
    "planned_answers_v2",
]
