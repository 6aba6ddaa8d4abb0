from hypothesis import given
from hypothesis import strategies as st

from fraud.normalize import normalize


def test_nfkc_folds_lookalike_forms():
    # Fullwidth letters and digits, a ligature and a circled digit are what scammers use.
    assert normalize("ＰａｙＰａｌ ｌｏｇｉｎ １２３") == "PayPal login 123"
    assert normalize("ﬁnal notice ①") == "final notice 1"


def test_zero_width_and_control_characters_are_removed():
    assert normalize("pa\u200byp\u200dal\ufeff") == "paypal"
    assert normalize("click\u202ehere\x07 now") == "clickhere now"


def test_whitespace_is_collapsed_and_trimmed():
    assert normalize("  your\tparcel\n\n is   held \u00a0 ") == "your parcel is held"


def test_removal_before_composition():
    # e + zero-width space + combining acute: composed once the zero-width space is gone.
    assert normalize("cafe\u200b\u0301") == "caf\u00e9"


@given(st.text())
def test_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


@given(st.text())
def test_no_edge_or_double_whitespace(text):
    out = normalize(text)
    assert out == out.strip()
    assert "  " not in out
