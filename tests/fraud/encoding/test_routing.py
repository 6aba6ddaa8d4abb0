"""Routing by script: which model a text goes to, and the shape of what comes back."""

import numpy as np
import pytest

from fraud.encoding.routed import CENTERING_TEXTS, RoutedEncoder, is_other_script, script_units
from tests.fakes import unit_vectors


@pytest.mark.parametrize(
    ("text", "other"),
    [
        ("Your parcel is held at the depot", False),
        ("您的包裹被扣留，请支付费用", True),
        ("您的验证码是 xxxxxx", True),  # a dataset's digit mask is one Latin "word"
        ("联系xxxxxxxxxxx", True),
        ("Your Apple ID code: 验证", False),  # 4 Latin words against 2 characters
        ("Hi 好", False),  # a tie stays Latin
        ("Привет, мама, это мой новый номер", True),
        ("مرحبا، لقد ربحت جائزة", True),
        ("お荷物の配達に失敗しました", True),
        ("ＰａｙＰａｌ ｌｏｇｉｎ", False),  # full-width Latin is Latin after NFKC
        ("Café Olé: your table is booked", False),
        ("12345 678", False),  # no letters: Latin
        ("", False),
    ],
)
def test_a_text_goes_to_the_model_of_its_script(text, other):
    assert is_other_script(text) is other


def test_script_units_count_words_and_han_characters():
    assert script_units("pay 中奖 now Привет") == (2, 3)


class Fake:
    """A fake encoder: a fixed random unit vector per text, and a record of what it saw."""

    def __init__(self, name: str, dim: int, seed: int) -> None:
        self.name, self.dim, self.seed, self.seen = name, dim, seed, []
        self.batch_size = 8

    def encode(self, texts, progress=None):
        self.seen.append(list(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = unit_vectors(1, self.dim, seed=self.seed + sum(map(ord, t)))[0]
        return out


TEXTS = ["hello there", "你好，明天见", "see you at 5", "Привет", "中奖通知"]


@pytest.mark.parametrize("center", [False, True])
def test_each_text_fills_the_half_of_its_model_with_unit_rows(center):
    latin, other = Fake("en", 4, 0), Fake("ml", 6, 100)
    routed = RoutedEncoder(latin, other, center=center)
    X = routed.encode(TEXTS)
    assert X.shape == (5, 10) and routed.dim == 10 and X.dtype == np.float32
    assert np.linalg.norm(X, axis=1) == pytest.approx(np.ones(5), abs=1e-6)
    assert latin.seen == [["hello there", "see you at 5"]]  # one call per model, in order
    assert other.seen[-1] == ["你好，明天见", "Привет", "中奖通知"]
    assert not X[[0, 2], 4:].any() and not X[[1, 3, 4], :4].any()
    assert np.array_equal(X[[0, 2], :4], Fake("en", 4, 0).encode(["hello there", "see you at 5"]))
    # Two texts of different scripts are orthogonal: no key of the other script attends.
    assert float(X[0] @ X[1]) == 0.0


def test_centering_subtracts_the_mean_of_the_centering_texts():
    other = Fake("ml", 6, 100)
    routed = RoutedEncoder(Fake("en", 4, 0), other, center=True)
    routed.encode(["hello there"])
    assert other.seen == []  # a text in Latin script does not need the mean
    routed.encode(["中奖通知"])
    assert other.seen[0] == list(CENTERING_TEXTS)
    mean = Fake("ml", 6, 100).encode(list(CENTERING_TEXTS)).mean(axis=0)
    raw = Fake("ml", 6, 100).encode(["中奖通知"])[0] - mean
    assert routed.encode(["中奖通知"])[0, 4:] == pytest.approx(raw / np.linalg.norm(raw), abs=1e-6)


def test_name_and_cache_key_tell_centered_from_plain():
    plain = RoutedEncoder(Fake("en", 4, 0), Fake("ml", 6, 1), center=False)
    centered = RoutedEncoder(Fake("en", 4, 0), Fake("ml", 6, 1))
    assert plain.name == "en|ml" and centered.name.startswith("en|ml~centered")
    assert plain.cache_key != centered.cache_key
    centered.batch_size = 3
    assert (centered.latin.batch_size, centered.other.batch_size) == (3, 3)
