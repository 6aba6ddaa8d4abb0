"""Text normalization, applied identically to references and to scored messages.

Bump NORMALIZATION_VERSION whenever the output of `normalize` changes for any input:
index manifests record it and an index built under another version is refused.

Version 2 undoes the spelling tricks scammers use to get past filters, each with a
conservative rule so that ordinary text comes out as it went in:

- invisible characters: zero-width, bidi and other format characters, lone surrogates;
- full-width and other compatibility forms ("ＰａｙＰａｌ"): NFKC;
- obfuscated links: "hxxps://", "example[.]com", "example(dot)com", "www . example . com";
- letter spacing: a run of 4 or more single letters separated by spaces, dots or hyphens
  ("c l i c k  h e r e", "P.a.y.P.a.l", "s-e-c-u-r-i-t-y c-o-d-e") is joined where the
  gap is the run's usual one, a different gap staying a word break;
- homoglyphs: Cyrillic and Greek look-alikes inside a Latin word ("P\\u0430ypal" with a
  Cyrillic a); in a text that is mostly Latin, words spelt only with look-alikes too.
  Russian or Greek text keeps its letters;
- leetspeak: digits standing for letters in a lower- or mixed-case word ("p4ypa1", "w1n",
  "fr33"); never numbers ("£1000", "07700"), numbers with a unit ("10am", "3rd"),
  numbers inside a word ("Max10mins"), codes in capitals ("SW1A", "APX300") or words
  next to non-Latin letters.

Version 3 handles Chinese text (Han characters; nothing here touches kana or hangul):

- spacing inserted between characters to evade filters: whitespace between two Han
  characters is removed ("中 奖 通 知", "中　奖" with an ideographic space), and between a
  Han character and the punctuation next to it ("中奖 , 请"), and so is one
  symbol repeated between four or more single Han characters ("中*奖*通*知", "加·微·信·号").
  Chinese puts no spaces between words, so this loses nothing; spaces next to a Latin word
  or a number stay;
- traditional characters become simplified ones (OpenCC's t2s tables, character by
  character and by phrase), so "恭喜您中獎" and "恭喜您中奖" are one text. Not in a text with
  kana: Japanese keeps its kanji;
- digit masks, that is digits disguised so that a filter looking for numbers misses them:
  NFKC already folds full-width (１２３), circled (①), parenthesized (⑴) and
  mathematical (𝟏) digits; this also folds the dingbat and double-circled digits NFKC leaves
  alone (❶ ➀ ➊ ⓵ ⓫ ⓿), and a run of five or more Chinese digit characters, the way a
  phone, QQ or account number is spelt to hide it ("一三八零零一三八零零零", "幺" for 1,
  "壹贰叁" financial forms), into ASCII digits. Amounts with 十 百 千 万 are words, not
  disguised digits, and stay. Masks such as the "x" with which a dataset hid its digits
  ("xxx元") are left as they are.
"""

import functools
import re
import unicodedata
from collections import Counter
from itertools import chain

NORMALIZATION_VERSION = 3

# Zero-width characters used to split words invisibly ("pa\u200bypal"), the BOM, and the
# combining grapheme joiner (a mark that renders as nothing).
_ZERO_WIDTH = frozenset(map(ord, "\u200b\u200c\u200d\u2060\u180e\ufeff\u034f"))
_WHITESPACE = re.compile(r"\s+")
# One pass can make room for another trick (leet "c0m" becomes a top-level domain only
# once the digit is folded), so passes repeat until nothing changes: in practice 2.
# The cap bounds the cost of a hostile text.
_MAX_PASSES = 4


class _Invisible(dict):
    """A str.translate table that deletes zero-width, control (Cc), format (Cf: bidi
    overrides, soft hyphen...) and lone surrogate (Cs: not text, the tokenizer refuses
    them) characters. Whitespace is kept here and collapsed later, so "line1\nline2"
    stays two words. Each code point's answer is looked up once, then cached."""

    def __missing__(self, code: int) -> int | None:
        ch = chr(code)
        gone = code in _ZERO_WIDTH or (
            unicodedata.category(ch) in ("Cc", "Cf", "Cs") and not ch.isspace()
        )
        value = None if gone else code
        if len(self) < 65_536:  # bounded: a text cycling through every code point
            self[code] = value
        return value


_INVISIBLE = _Invisible()


# -- obfuscated links -------------------------------------------------------------------

_TLDS = "com|net|org|info|biz|io|co|uk|ru|cn|xyz|ly"
_HXXP = re.compile(r"(?<![A-Za-z0-9])h(?:xx|\*\*)p(s?)(?=(?::|\[:\])//)", re.IGNORECASE)
_BRACKET_COLON = re.compile(r"\[:\](?=//)")
_BRACKET_DOT = re.compile(
    r"(?<=[A-Za-z0-9]) {0,2}(?:\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\}) {0,2}(?=[A-Za-z0-9])",
    re.IGNORECASE,
)
_WORD_DOT = re.compile(rf"(?<=[A-Za-z0-9]) {{1,2}}(?:dot|DOT) {{1,2}}(?=(?:{_TLDS})\b)")
# A chain of host labels separated by dots, some with spaces around them. Possessive
# quantifiers and the look-behind keep the scan linear on any input.
_HOST_CHAIN = re.compile(r"(?<![A-Za-z0-9.-])[A-Za-z0-9-]++(?: {0,2}\. {0,2}[A-Za-z0-9-]++)++")
_SPACED_DOT = re.compile(r"( {0,2}\. {0,2})")
_TLD_NAMES = frozenset(_TLDS.split("|"))


def _is_tld(label: str) -> bool:
    # "com" or "COM", not "Com": a title-case word is the start of a sentence.
    return label.lower() in _TLD_NAMES and (label.islower() or label.isupper())


def _join_host(m: re.Match) -> str:
    """ "www . bank . com" and "my-bank . co . uk" lose their spaces; "frozen. bank.io"
    (a sentence ending before a link) and "in the UK. US" keep theirs."""
    host = m.group()
    if " " not in host:
        return host
    parts = _SPACED_DOT.split(host)
    labels, dots = parts[::2], parts[1::2]
    if labels[0].lower() == "www":
        # Up to the last top-level domain: "www . txt . com. Questions" keeps its sentence.
        tlds = [i for i, label in enumerate(labels) if _is_tld(label)]
        first, last = 1, tlds[-1] if tlds else len(labels) - 1
    else:
        first = len(labels)
        while first > 0 and _is_tld(labels[first - 1]):
            first -= 1
        if first in (0, len(labels)):
            return host  # no top-level domain at the end, or nothing but
        last = len(labels) - 1
    out = [labels[0]]
    for i, (dot, label) in enumerate(zip(dots, labels[1:], strict=True), start=1):
        out.append("." if first <= i <= last else dot)
        out.append(label)
    return "".join(out)


def _fold_links(text: str) -> str:
    if "//" in text:
        text = _BRACKET_COLON.sub(":", _HXXP.sub(r"http\1", text))
    if "[" in text or "(" in text or "{" in text:
        text = _BRACKET_DOT.sub(".", text)
    if "dot" in text or "DOT" in text:
        text = _WORD_DOT.sub(".", text)
    if "." in text:
        text = _HOST_CHAIN.sub(_join_host, text)
    return text


# -- letter spacing ---------------------------------------------------------------------

# Letters of the scripts that get spelt out letter by letter (Latin, Greek, Cyrillic),
# and ASCII digits. CJK characters are not in it: Chinese text is often spaced.
_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff"
_GREEK = "\u0370-\u03ff\u1f00-\u1fff"
_CYRILLIC = "\u0400-\u052f"
_ALNUM = rf"[{_LATIN}{_GREEK}{_CYRILLIC}0-9]"
# One letter standing alone; not the s of "friend's".
_SINGLE = rf"(?<![^\W_])(?<!['\u2019]){_ALNUM}(?![^\W_])"
_GAP = r"(?: {0,2}[.\-] {0,2}| {1,2})"  # whitespace runs are at most 2 spaces by then
_SPACED_RUN = re.compile(rf"{_SINGLE}(?:{_GAP}{_SINGLE}){{3,}}")
_RUN_PARTS = re.compile(r"[ .\-]+|[^ .\-]")
_FEW_SPACES = re.compile(r"\s+")


def _cap_spaces(m: re.Match) -> str:
    return " " if len(m.group()) == 1 else "  "


def _fold_spaced_run(letters: list[str], gaps: list[str]) -> str:
    """Join letters at the most frequent kind of gap in the run (on a tie the tightest:
    "." before " " before "  "); the other gaps are word breaks. A gap seen only once
    joins nothing ("a G. e.g"). Four or more single letters left between word breaks
    ("r e b a t e. A.p.p.l.y") are a spaced word of their own: folded the same way."""
    counts = Counter(gaps)
    join = min(counts, key=lambda g: (-counts[g], len(g), g.isspace()))
    if counts[join] < 2:
        return "".join(chain.from_iterable(zip(letters, [*gaps, ""], strict=True)))
    words, breaks = [letters[0]], []
    for letter, gap in zip(letters[1:], gaps, strict=True):
        if gap == join:
            words[-1] += letter
        else:
            words.append(letter)
            breaks.append(gap)
    # The breaks never include `join`, so each recursion has fewer kinds of gap: it ends.
    out, i = [], 0
    while i < len(words):
        j = i
        while j < len(words) and len(words[j]) == 1:
            j += 1
        if j - i >= 4:
            out.append(_fold_spaced_run(words[i:j], breaks[i : j - 1]))
        else:
            out.append(words[i])
            j = i + 1
        if j < len(words):
            out.append(breaks[j - 1])
        i = j
    return "".join(out)


def _join_spaced(m: re.Match) -> str:
    parts = _RUN_PARTS.findall(m.group())
    letters, gaps = parts[::2], parts[1::2]
    if sum(ch.isalpha() for ch in letters) * 2 <= len(letters):
        return m.group()  # a spaced number ("0 7 7 0 0") or texting ("2 u 4 a"), not a word
    return _fold_spaced_run(letters, gaps)


# -- homoglyphs -------------------------------------------------------------------------

# Cyrillic and Greek letters that look like a Latin one in common fonts.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic capitals, then small letters
        "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M",
        "\u041d": "H", "\u041e": "O", "\u0420": "P", "\u0421": "C", "\u0422": "T",
        "\u0425": "X", "\u0423": "Y", "\u04ae": "Y", "\u0405": "S", "\u0406": "I",
        "\u0408": "J", "\u04c0": "I", "\u051a": "Q", "\u051c": "W", "\u04bb": "h",
        "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c",
        "\u0443": "y", "\u0445": "x", "\u0455": "s", "\u0456": "i", "\u0458": "j",
        "\u0501": "d", "\u051b": "q", "\u051d": "w", "\u04cf": "l", "\u043a": "k",
        # Greek capitals, then small letters
        "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H",
        "\u0399": "I", "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O",
        "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y", "\u03a7": "X",
        "\u03bf": "o", "\u03b1": "a", "\u03bd": "v", "\u03b9": "i", "\u03ba": "k",
        "\u03c1": "p", "\u03c5": "u", "\u03c7": "x", "\u03f2": "c", "\u03f3": "j",
    }
)  # fmt: skip
_CONFUSABLE_CHARS = frozenset(chr(c) for c in _CONFUSABLES)
_FOREIGN_LETTER = re.compile(rf"[{_GREEK}{_CYRILLIC}]")
_LATIN_LETTER = re.compile(rf"[{_LATIN}]")
_MIXED_WORD = re.compile(rf"[{_LATIN}{_GREEK}{_CYRILLIC}0-9]+")


def _foreign_letters(word: str) -> list[str]:
    return [ch for ch in _FOREIGN_LETTER.findall(word) if ch.isalpha()]


def _fold_homoglyphs(text: str) -> str:
    if not _FOREIGN_LETTER.search(text):
        return text

    def in_latin_word(m: re.Match) -> str:
        word = m.group()
        foreign = _foreign_letters(word)
        if foreign and _LATIN_LETTER.search(word) and _CONFUSABLE_CHARS.issuperset(foreign):
            return word.translate(_CONFUSABLES)
        return word

    text = _MIXED_WORD.sub(in_latin_word, text)
    # Whole words of look-alikes ("\u0420\u0430\u0443" for "Pay") are folded only when the text is
    # mostly Latin: more Latin letters than Greek or Cyrillic letters without a Latin twin.
    # Counted after the pass above, so that a second pass decides the same.
    latin = len(_LATIN_LETTER.findall(text))
    unique = sum(1 for ch in _foreign_letters(text) if ch not in _CONFUSABLE_CHARS)
    if latin <= unique:
        return text

    def lookalike_word(m: re.Match) -> str:
        word = m.group()
        foreign = _foreign_letters(word)
        if foreign and _CONFUSABLE_CHARS.issuperset(foreign):
            return word.translate(_CONFUSABLES)
        return word

    return _MIXED_WORD.sub(lookalike_word, text)


# -- leetspeak --------------------------------------------------------------------------

_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t"}  # "1": i or l, below
_VOWELS = frozenset("aeiou043")  # 0, 3, 4 stand for vowels
_L_CLUSTER = frozenset("bcfgkps")  # "c1ick", "b1ock", "p1ease": 1 is an l after these
# A word of Latin letters with a digit in it (the look-behind starts it at a word start).
_LATIN_WORD = re.compile(rf"(?<![^\W_])[{_LATIN}]*[0-9][{_LATIN}0-9]*(?![^\W_])")
_DIGIT = re.compile(r"[0-9]")
_DIGIT_RUNS = re.compile(r"[0-9]{2,}")


def _one(prev: str | None, nxt: str | None) -> str:
    """1 is an l or an i depending on its neighbours: "pa1", "c1ick", "1ogin", "ba1ance"
    are l; "w1n", "fr1end", "ema1l" are i."""
    p = prev.lower() if prev else None
    n = nxt.lower() if nxt else None
    if p is None:
        return "l" if n in _VOWELS else "i"
    if n is None:
        return "l" if p in _VOWELS else "i"
    if n in _VOWELS and (p in _VOWELS or p in _L_CLUSTER):
        return "l"
    return "i"


def _between_letters(word: str, i: int) -> bool:
    return any(ch.isalpha() for ch in word[:i]) and any(ch.isalpha() for ch in word[i + 1 :])


def _is_number(run: str) -> bool:
    """Consecutive digits that read as a number rather than as letters: three or more
    different ones, or two with a 5 or a 7 in them, or 10. Not "33", "00", "41", "04"."""
    if len(set(run)) == 1:
        return False
    return len(run) >= 3 or "5" in run or "7" in run or run == "10"


def _is_leet(word: str) -> bool:
    """Digits standing for letters in a word of letters: "w1n", "p4ypa1", "fr33". Not a
    number with its unit ("10am", "3rd", "4g"), a number inside a word ("Max10mins"), a
    code ("SW1A", "APX300", "b2b", "h264", "mp3"), texting ("gr8", "l8r") or a number
    ending a name ("room30", "Matrix3"). A 1, 4 or 5 standing for a word between two
    words ("likes4cash", "Only1more") is folded too: nothing tells it from leet."""
    digits = [i for i, ch in enumerate(word) if ch.isdigit()]
    letters = len(word) - len(digits)
    if not digits or letters < 2 or letters < len(digits):
        return False
    if any(word[i] not in _LEET and word[i] != "1" for i in digits):
        return False  # 2, 6, 8 and 9 stand for words and sounds, if anything
    if word.upper() == word:
        return False  # capitals and digits: a postcode, a reference, a promo code
    if any(_is_number(run) for run in _DIGIT_RUNS.findall(word)):
        return False  # a number inside: "Max10mins", "norm150p", "PoBox75"
    if any(_between_letters(word, i) for i in digits):
        return True  # "w1n", "p4ypa1", "0nl1ne", "cl41m"
    if word[0].isdigit():
        return False  # "10am", "3rd", "4g", "5days": a number and its unit
    # Letters then digits: "fr33", "yah00", but not "Matrix3", "Club4", "ps4".
    suffix = word[digits[0] :]
    return len(suffix) >= 2 and len(set(suffix)) == 1 and suffix[0] in "034"


def _unleet(m: re.Match) -> str:
    word = m.group()
    if not _is_leet(word):
        return word
    chars = list(word)
    for i, ch in enumerate(chars):
        if ch == "1":
            chars[i] = _one(
                chars[i - 1] if i else None, chars[i + 1] if i + 1 < len(chars) else None
            )
        elif ch in _LEET:
            chars[i] = _LEET[ch]
    return "".join(chars)


def _fold_leet(text: str) -> str:
    if not _DIGIT.search(text):
        return text
    return _LATIN_WORD.sub(_unleet, text)


# -- Chinese ----------------------------------------------------------------------------

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAN_CHAR = re.compile(f"[{_HAN}]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff]")
_HAN_SPACE_HAN = re.compile(rf"(?<=[{_HAN}])\s+(?=[{_HAN}])")
# Punctuation as NFKC leaves Chinese punctuation: a space before it after a Han character,
# or after it between Han characters, is spacing too ("中奖 , 请" is "中奖,请").
_PUNCT = ",.!?;:、。“”‘’《》()【】"
_HAN_SPACE_PUNCT = re.compile(
    rf"(?<=[{_HAN}])\s+(?=[{_PUNCT}])|(?<=[{_HAN}][{_PUNCT}])\s+(?=[{_HAN}])"
)
# Four or more single Han characters with one and the same symbol between them.
_HAN_SEPARATED = re.compile(
    rf"[{_HAN}](?P<sep>[*·.\-_/|~+#^=\\•・❤♥★☆✿◆●○])[{_HAN}](?:(?P=sep)[{_HAN}]){{2,}}"
)
# Digit forms NFKC leaves as they are: dingbat circled digits (negative, sans-serif,
# negative sans-serif), double circled and negative circled digits, the circled zeros.
DIGIT_FORMS = str.maketrans(
    {
        **{chr(0x2776 + i): str(i + 1) for i in range(9)},  # ❶-❾
        **{chr(0x2780 + i): str(i + 1) for i in range(9)},  # ➀-➈
        **{chr(0x278A + i): str(i + 1) for i in range(9)},  # ➊-➒
        **{chr(0x24F5 + i): str(i + 1) for i in range(9)},  # ⓵-⓽
        "\u277f": "10", "\u2789": "10", "\u2793": "10", "\u24fe": "10",
        **{chr(0x24EB + i): str(i + 11) for i in range(10)},  # ⓫-⓴
        "\u24ff": "0", "\U0001f10b": "0", "\U0001f10c": "0",
    }
)  # fmt: skip
_CHINESE_DIGITS = {
    **dict(zip("零〇一二三四五六七八九", "00123456789", strict=True)),
    **dict(zip("幺壹贰叁肆伍陆柒捌玖", "1123456789", strict=True)),  # after t2s: 貳 is 贰
}
_CHINESE_DIGIT_RUN = re.compile(f"[{''.join(_CHINESE_DIGITS)}]{{5,}}")
_T2S = None


def _to_simplified(text: str) -> str:
    global _T2S
    if _T2S is None:
        import opencc

        _T2S = opencc.OpenCC("t2s")
    return _T2S.convert(text)


def _fold_chinese(text: str) -> str:
    if not _HAN_CHAR.search(text):
        return text
    text = _HAN_SPACE_PUNCT.sub("", _HAN_SPACE_HAN.sub("", text))
    text = _HAN_SEPARATED.sub(lambda m: m.group().replace(m.group("sep"), ""), text)
    if not _KANA.search(text):
        text = _to_simplified(text)
    return _CHINESE_DIGIT_RUN.sub(lambda m: "".join(_CHINESE_DIGITS[ch] for ch in m.group()), text)


# -- the whole ------------------------------------------------------------------------


def _fold_once(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(DIGIT_FORMS)
    text = _FEW_SPACES.sub(_cap_spaces, text)
    text = _fold_chinese(text)
    text = _fold_links(text)
    text = _SPACED_RUN.sub(_join_spaced, text)
    text = _fold_homoglyphs(text)
    text = _fold_leet(text)
    text = _fold_links(text)  # "hxxp" spelt with look-alikes, "c0m" spelt in leet
    return _WHITESPACE.sub(" ", text).strip()


# A scored message is normalized three times: to route it by script
# (fraud/encoding/routed.py), to encode it (fraud/encoding/encoder.py) and for the head's
# character n-grams (fraud/text/ngrams.py), by three layers that do not pass text to each
# other. The last 128 texts' results are kept, so the second and third calls are
# lookups: a worker's batch is at most 64 texts by default (FRAUD_KAFKA__MAX_BATCH), a
# service's 32.
# Texts of SMS size make that a few tens of KiB; at the worker's 64 KiB limit a record,
# at most 128 texts and their results, 16 MiB for ASCII.
NORMALIZE_CACHE_SIZE = 128


@functools.lru_cache(maxsize=NORMALIZE_CACHE_SIZE)
def normalize(text: str) -> str:
    """Invisible characters removed, NFKC, spelling tricks undone, whitespace collapsed.

    Removal comes before NFKC so that characters the removal brings together (a letter
    and a combining accent split by a zero-width space) are composed too. Every step
    after NFKC and the digit forms (❿ is "10") only removes characters or replaces one
    with one, so the output is never longer than that, and
    normalize(normalize(t)) == normalize(t).
    """
    out = _fold_once(text.translate(_INVISIBLE))
    for _ in range(_MAX_PASSES - 1):
        again = _fold_once(out)
        if again == out:
            break
        out = again
    return out
