"""`fraud index measure`'s label mappings (pure logic: the scoring is the detector's)."""

import pytest

from fraud.errors import DataError
from workers.cli.index import _mapping_figures

LABELS = ["smishing", "spam", "ham", "ham", "smishing", "ham"]
SCORES = [0.9, 0.2, 0.7, 0.1, 0.4, 0.05]


def test_each_mapping_keeps_only_its_own_labels_and_counts_false_alerts_at_the_threshold():
    both = _mapping_figures(LABELS, SCORES, 0.5, "smishing,spam:ham")
    assert (both["fraud"], both["legit"]) == (3, 3)
    assert both["confusion"] == {"tp": 1, "fp": 1, "tn": 2, "fn": 2}
    assert both["false_alert_rate"] == pytest.approx(1 / 3)
    alone = _mapping_figures(LABELS, SCORES, 0.5, "smishing:ham")  # the spam row left out
    assert (alone["fraud"], alone["legit"]) == (2, 3)
    assert alone["recall"] == pytest.approx(0.5) and alone["precision"] == pytest.approx(0.5)


@pytest.mark.parametrize("mapping", ["smishing", "smishing:smishing", ":ham", "fraud:ham"])
def test_a_mapping_that_cannot_be_measured_is_one_readable_error(mapping):
    with pytest.raises(DataError, match="--mapping"):
        _mapping_figures(LABELS, SCORES, 0.5, mapping)
