import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.paired import compare_paired


def test_the_drop_counts_discordant_pairs_and_its_interval_holds_it() -> None:
    baseline = [True] * 60 + [False] * 40
    variant = [True] * 55 + [False] * 5 + [True] * 2 + [False] * 38
    result = compare_paired(baseline, variant)
    assert (result.only_baseline_right, result.only_variant_right) == (5, 2)
    assert result.drop == pytest.approx(0.03)
    assert result.drop_low <= result.drop <= result.drop_high
    assert result.drop_high - result.drop_low < 0.12


def test_identical_answers_give_a_zero_width_interval() -> None:
    hits = [True, False, True, True]
    result = compare_paired(hits, hits)
    assert result.drop == result.drop_low == result.drop_high == 0.0


def test_the_pairing_tightens_the_interval_over_shuffled_answers() -> None:
    """Shared noise cancels: 5 discordant pairs in 400 give a narrow interval."""
    baseline = [i % 2 == 0 for i in range(400)]
    variant = list(baseline)
    for i in range(0, 10, 2):
        variant[i] = False
    result = compare_paired(baseline, variant)
    assert result.drop_high - result.drop_low < 0.03


@pytest.mark.parametrize("variant", [[True], []])
def test_unpaired_answers_are_refused(variant) -> None:
    with pytest.raises(UserInputError, match="same questions"):
        compare_paired([True, False], variant)
