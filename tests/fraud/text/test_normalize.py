import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraud.text.normalize import normalize


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


# -- version 2: spelling tricks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("tricked", "plain"),
    [
        ("P\u0430yP\u0430l", "PayPal"),  # Cyrillic a inside a Latin word
        ("\u0420\u0430ypal login", "Paypal login"),  # Cyrillic capital P and small a
        ("Gr\u03bfup \u039fffer", "Group Offer"),  # Greek omicrons
        ("Your \u0430\u0441\u0441\u043eunt", "Your account"),
        # A word spelt only with look-alikes, in a text that is mostly Latin.
        ("Click \u0441\u043e\u0440 now to claim", "Click cop now to claim"),
    ],
)
def test_homoglyphs_in_latin_text_are_folded(tricked, plain):
    assert normalize(tricked) == plain


@pytest.mark.parametrize(
    "text",
    [
        "Привет, как дела? Всё хорошо, спасибо.",
        "Ваш код подтверждения: 4821. Никому его не сообщайте.",
        "Καλημέρα, το δέμα σας έφτασε στο κατάστημα.",
        "сор",  # a Russian word made of look-alikes, alone: no Latin context
    ],
)
def test_russian_and_greek_text_keeps_its_letters(text):
    assert normalize(text) == text


def test_a_latin_brand_disguised_inside_russian_text_is_folded_alone():
    assert normalize("Ваш аккаунт P\u0430ypal заблокирован") == "Ваш аккаунт Paypal заблокирован"


@pytest.mark.parametrize(
    ("spaced", "joined"),
    [
        ("c l i c k  h e r e", "click here"),
        ("C l i c k here", "Click here"),
        ("P.a.y.P.a.l", "PayPal"),
        ("verify your c-a-r-d now", "verify your card now"),
        ("s-e-c-u-r-i-t-y c-o-d-e", "security code"),
        ("A.p.p.l.y n.o.w", "Apply now"),
        ("r e b a t e. A.p.p.l.y n.o.w", "rebate. Apply now"),
        ("my friend's a c c o u n t", "my friend's account"),
    ],
)
def test_letter_spacing_is_joined(spaced, joined):
    assert normalize(spaced) == joined


@pytest.mark.parametrize(
    "text",
    [
        "I am a b c",  # three single letters: left alone
        "Plan B. A new start",
        "Call 0 8 0 0 1 2 3 now",  # a spaced number, not a word
        "J. R. Smith, 10 a.m. - 2 p.m.",
        "Mind the gap - it is 2 m wide",
    ],
)
def test_ordinary_single_letters_are_not_joined(text):
    assert normalize(text) == text


@pytest.mark.parametrize(
    ("leet", "plain"),
    [
        ("p4ypa1", "paypal"),
        ("w1n a fr33 pr1ze", "win a free prize"),
        ("c1ick to l0g1n", "click to login"),
        ("ver1fy your acc0unt", "verify your account"),
        ("P4ypa1", "Paypal"),
        ("fr1end", "friend"),
        ("0nl1ne", "online"),
    ],
)
def test_leetspeak_in_words_is_folded(leet, plain):
    assert normalize(leet) == plain


@pytest.mark.parametrize(
    "text",
    [
        "Send £1000 to 07700 900123 by 10am on the 3rd",
        "Your 4G plan, 5GB, 24h support, 2FA enabled",
        "mp3 web3 ps4 win10 covid19 b2b h264 x86",
        # Capitals and digits are codes: postcodes, references, promo codes.
        "SW1A 1AA, EC1V 4PW, ref AB3C4D, use code APX300 or P4YP4L",
        "gr8 l8r b4 some1 room30 apt40 Matrix3 Max10mins norm150p",  # texting, numbers
        "Order AB-1234, flight BA2490",
        "1st 2nd 3rd 4th 5days",
        "12.5% off, 3x faster",
    ],
)
def test_numbers_codes_and_units_keep_their_digits(text):
    assert normalize(text) == text


@pytest.mark.parametrize(
    ("obfuscated", "plain"),
    [
        ("hxxps://bank-verify[.]com/login", "https://bank-verify.com/login"),
        ("hXXp://example(dot)com", "http://example.com"),
        ("visit example [.] co [.] uk", "visit example.co.uk"),
        ("go to www . my-bank . com today", "go to www.my-bank.com today"),
        ("go to my-bank . com today", "go to my-bank.com today"),
        ("example dot com", "example.com"),
        ("hxxps[:]//pay[.]net", "https://pay.net"),
        ("p4ypa1-secure . c0m", "paypal-secure.com"),
    ],
)
def test_obfuscated_links_are_restored(obfuscated, plain):
    assert normalize(obfuscated) == plain


@pytest.mark.parametrize(
    "text",
    [
        "It is done. Com is short for company.",
        "Act now or your funds are frozen. paylane-verify.io/start",  # a sentence, then a link
        "Made in the UK. US orders ship later.",
        "I went to the shop. It was shut.",
        "e.g. this one",
        "A polka dot dress",
    ],
)
def test_sentences_with_dots_are_not_taken_for_links(text):
    assert normalize(text) == text


def test_lone_surrogates_are_removed():
    # Not text (the tokenizer refuses them); a JSON "\ud800" escape decodes to one.
    assert normalize("pay\ud800 now\udfff") == "pay now"


# CJK ideographs, kana, hangul, their punctuation and spaces.
_CJK = st.characters(
    codec="utf-8",
    categories=("Lo", "Po", "Ps", "Pe", "Zs"),
    min_codepoint=0x3000,
    max_codepoint=0xFFEF,
)


def _version_1(text: str) -> str:
    text = "".join(
        ch
        for ch in text
        if ch not in "\u200b\u200c\u200d\u2060\u180e\ufeff"
        and not (unicodedata.category(ch) in ("Cc", "Cf") and not ch.isspace())
    )
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@given(st.text(alphabet=_CJK).filter(lambda t: not _HAN.search(t)))
def test_kana_hangul_and_cjk_punctuation_get_nfkc_and_nothing_else(text):
    assert normalize(text) == _version_1(text)


@given(st.text(alphabet=_CJK))
def test_han_text_loses_inner_spaces_and_traditional_forms_only(text):
    from fraud.text.normalize import _to_simplified

    out = normalize(text)
    assert not re.search(f"{_HAN.pattern}\\s+{_HAN.pattern}", out)
    if not re.search("[\u3040-\u30ff]", out):
        assert _to_simplified(out) == out
    assert len(out) <= len(_version_1(text))


@pytest.mark.parametrize(
    ("tricked", "plain"),
    [
        ("中 奖 通 知 ： 请 点 击 领 取 。", "中奖通知:请点击领取。"),
        ("恭喜您中獎了 ，請 點 擊", "恭喜您中奖了,请点击"),
        ("恭\u3000喜\u3000您", "恭喜您"),  # ideographic spaces
        ("加*微*信*领*取", "加微信领取"),
        ("加·微·信·号 a.b.c", "加微信号 a.b.c"),
        ("恭喜您中獎了，請點擊連結領取獎金", "恭喜您中奖了,请点击连结领取奖金"),
        ("請致電客服", "请致电客服"),
        ("ＱＱ：１２３４５６", "QQ:123456"),
        ("联系电话❶❸❽⓿⓿➀➂➇⓿⓿⓿", "联系电话13800138000"),
        ("请加微信一三八零零一三八零零零", "请加微信13800138000"),
        ("扣扣幺二三四五六七", "扣扣1234567"),
        ("账号壹贰叁肆伍陆", "账号123456"),
    ],
)
def test_chinese_evasions_are_undone(tricked, plain):
    assert normalize(tricked) == plain


@pytest.mark.parametrize(
    "text",
    [
        "我们明天下午三点见,别迟到。",
        "本次消费一千五百元,余额三万二千元。",  # amounts are words, not disguised digits
        "三三两两地走进来",
        "乔·拜登发表讲话",  # one separator: a name, not a spaced word
        "您的验证码是 482913,5分钟内有效。",
        "收到 hello world 了吗",  # spaces next to Latin words stay
        "转账 xxx 元到尾号 xxxx 的账户",  # a dataset's digit masks stay
        "お荷物の配達に失敗しました",  # Japanese keeps its kanji and kana
    ],
)
def test_ordinary_chinese_text_is_unchanged(text):
    assert normalize(text) == text


def test_chinese_message_with_a_disguised_latin_word():
    assert (
        normalize("您的包裹已到达，请点击 p4ypa1 链接付款。")
        == "您的包裹已到达,请点击 paypal 链接付款。"
    )


# Pieces that make the tricks meet: spacing next to links, leet next to look-alikes...
_TRICKY = st.lists(
    st.sampled_from(
        [
            "a", "b", "I", "x", "\u0430", "\u0440", "\u03bf", "\u0416", "\u03bb", "中",
            "1", "0", "3", "4", "2", " ", "  ", ".", "-", " . ", "[.]", "(dot)", "[:]",
            "://", "hxxp", "www", "com", "c0m", "net", "\u200b", "\u0301", "ｆ", "'", "s",
            "pay", "P4y", "dot", "\n", "\t", "ﬁ", "獎", "三", "零", "*", "·", "❶", "お",
        ]
    ),
    max_size=40,
).map("".join)  # fmt: skip


@settings(max_examples=500)
@given(_TRICKY)
def test_idempotent_where_the_tricks_meet(text):
    once = normalize(text)
    assert normalize(once) == once


@given(st.text())
def test_never_longer_than_the_input_nfkc(text):
    from fraud.text.normalize import DIGIT_FORMS

    assert len(normalize(text)) <= len(unicodedata.normalize("NFKC", text).translate(DIGIT_FORMS))


def test_a_text_normalized_again_is_a_lookup_with_the_same_result():
    """A scored message is normalized by the router, the encoder and the n-grams
    (fraud/text/normalize.py NORMALIZE_CACHE_SIZE): the second call finds the first's
    result, equal to a fresh computation, and the cache stays bounded."""
    from fraud.text.normalize import NORMALIZE_CACHE_SIZE

    text = "Y0ur p\u200barcel is h3ld: pay at hxxp://parcel-fee[.]com"
    first = normalize(text)
    hits = normalize.cache_info().hits
    assert normalize(text) == first == normalize.__wrapped__(text)
    assert normalize.cache_info().hits == hits + 1
    for i in range(2 * NORMALIZE_CACHE_SIZE):
        normalize(f"message {i}")
    assert normalize.cache_info().currsize == NORMALIZE_CACHE_SIZE
