"""A spiking encoder against its integer program and float on real text (tiny BERT)."""

from __future__ import annotations

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.spiking.quality import spiking_agreement


def test_a_settled_spiking_encoder_matches_and_fewer_steps_approximate():
    found = spiking_agreement(load_model("tiny-bert"), levels=16, inputs=3, calibration=4,
                              steps=(2, 8, 200), max_steps=200, max_length=16, batch_size=2)
    assert found.batches == 2 and found.settled == 2 and found.bit_exact is True
    assert found.cosine_at[200] == pytest.approx(found.integer_cosine)
    assert found.cosine_at[2] < found.cosine_at[8] <= found.cosine_at[200]
    assert found.accumulates > 0 and found.macs > 0 and 0 < found.spike_rate <= 16


def test_a_decoder_is_refused():
    with pytest.raises(UserInputError, match="not an encoder"):
        spiking_agreement(load_model("tiny-llama"))


def test_a_spiking_dinov2_tower_matches_on_real_images():
    from mfmaccel.models.medvlm import TINY_PRETRAINED, build_medvlm
    from mfmaccel.spiking.quality import tower_agreement

    vlm = build_medvlm(seed=0, tiny=True, vision=TINY_PRETRAINED)
    found = tower_agreement(vlm, levels=16, inputs=3, calibration=4, steps=(2, 600),
                            max_steps=600, batch_size=2)
    assert found.batches == 2 and found.settled == 2 and found.bit_exact is True
    assert found.cosine_at[600] == pytest.approx(found.integer_cosine)
    assert found.cosine_at[2] < found.cosine_at[600]


def test_a_tower_other_than_dinov2_is_refused():
    from mfmaccel.spiking.quality import tower_agreement

    with pytest.raises(UserInputError, match="has no DINOv2 vision tower"):
        tower_agreement(load_model("medvlm-tiny"))


def test_compute_energy_prices_macs_against_accumulates():
    from mfmaccel.spiking.quality import compute_energy

    energy = compute_energy(macs=1_000_000, accumulates=3_000_000, membrane_updates=0)
    assert energy["integer"] == pytest.approx(0.3) and energy["spiking"] == pytest.approx(0.3)
    assert energy["ratio"] == pytest.approx(1.0)
    assert energy["break_even_accumulates_per_mac"] == pytest.approx(3.0)
