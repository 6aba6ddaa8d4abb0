"""Two encoders as one, chosen per text by its script (README, Languages).

The English model (all-MiniLM-L6-v2) embeds English far better than it embeds Chinese;
the multilingual one (multilingual-e5-small) embeds Chinese well. `RoutedEncoder` sends
each text to one of them by the script it is written in, and returns the same thing as
an `Encoder`: an (n, dim) float32 array of unit rows, with

    dim = dim(latin) + dim(other)
    row = [latin embedding, zeros]   for a text in Latin script (or with no letters)
          [zeros, other embedding]   for a text in another script

so the dot product of two rows is the cosine of their own model when both went to the
same model, and 0 when they did not. One FAISS index, one attention scorer, one learned
head serve both: a Latin-script message is compared with Latin-script references exactly
as by the English model alone, a Chinese one with Chinese references as by the
multilingual model alone (centered, below), and a reference of the other script is as
far from it as an unrelated text.

Centering: the two models do not share a scale of similarity. Over all pairs of the seed
set's messages (most of them unrelated), all-MiniLM-L6-v2 gives cosines around 0.18 (sd
0.12) on the English ones and multilingual-e5-small around 0.87 (sd 0.02) on the Chinese
ones: every e5 embedding shares one large common
component. The scorer's parameters (tau 0.5, T 0.05), the campaign threshold (0.8) and the
history's keys were all set on MiniLM's scale, where e5 would put every Chinese message
near every other. So the multilingual half is centered: the mean embedding m of a fixed
set of ordinary messages in several scripts (`CENTERING_TEXTS`, written for this, none a
scam) is subtracted and the row normalized again, (e - m) / |e - m|. On the seed set's
Chinese messages that gives pairs at 0.28 (sd 0.12), nearest neighbours at 0.55 on
average: MiniLM's scale (0.18, sd 0.12; 0.57). m is computed (32 short texts) when the
first text in another script comes, and the encoder's name and cache key say "centered".

Memory: `Encoder.from_settings` builds the multilingual encoder lazily, so its weights are
loaded with that first text too; a worker or a service on a stream in Latin script never
loads them (docs/performance.md, memory).

The script of a text: its letters are counted in units, a run of Latin letters being one
unit (an English word), a run of letters of another alphabet one unit too (a Russian
word), and each Han or kana character one unit (Chinese writes no spaces; a character is
closer to a word than to a letter). The text goes to the other model when its units in
other scripts outnumber its Latin ones (a tie stays Latin): "您的验证码是 xxxxxx" goes
there (6 to 1), "Your Apple ID code: 验证" does not (4 to 2). Counted on the normalized
text, so full-width Latin letters are Latin.

This module imports neither torch nor transformers.
"""

import re
from collections.abc import Callable, Sequence

import numpy as np

from fraud.text.normalize import normalize

_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff"
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_UNITS = re.compile(rf"(?P<cjk>[{_CJK}])|(?P<latin>[{_LATIN}]+)|(?P<other>[^\W\d_{_LATIN}{_CJK}]+)")


def script_units(text: str) -> tuple[int, int]:
    """(Latin units, units in other scripts) of an already normalized text."""
    latin = other = 0
    for m in _UNITS.finditer(text):
        if m.lastgroup == "latin":
            latin += 1
        else:
            other += 1
    return latin, other


def is_other_script(text: str) -> bool:
    """Whether `text` (raw) goes to the multilingual model."""
    latin, other = script_units(normalize(text))
    return other > latin


# Ordinary messages in the scripts that go to the multilingual model, for its mean
# embedding (see Centering above). Written for this; changing them changes the encoder's
# output, so its name: bump CENTERING_VERSION with them.
CENTERING_VERSION = 1
CENTERING_TEXTS = (
    "今天天气不错，我们下午去公园走走吧。",
    "会议改到明天上午十点，地点不变。",
    "我已经到车站了，你到了给我打电话。",
    "晚饭想吃什么？我下班顺路去买菜。",
    "孩子的作业写完了，正在看书。",
    "这本书我看完了，写得很有意思。",
    "周末要不要一起去看电影？",
    "妈妈做的红烧肉还是那么好吃。",
    "本店营业时间为每天早上九点到晚上十点。",
    "图书馆本周六闭馆一天，周日照常开放。",
    "明天有小雨，气温比今天低五度。",
    "请各位同事在周五前提交本月的工作总结。",
    "新开的那家面馆味道不错，价格也合适。",
    "我把照片发到群里了，大家看看。",
    "地铁二号线今天晚上延长运营一小时。",
    "祝你工作顺利，身体健康。",
    "这个周末我要回老家看望爷爷奶奶。",
    "小区里的桂花开了，闻起来很香。",
    "你上次推荐的那首歌我很喜欢。",
    "飞机晚点了，大概晚上九点才能到。",
    "明天の会議は午後三時からです。",
    "駅に着いたら連絡してください。",
    "今日はとても暑いですね。",
    "오늘 저녁에 같이 밥 먹을래요?",
    "회의는 내일 오전 열 시에 시작합니다.",
    "Встретимся завтра у входа в парк.",
    "Спасибо за помощь, всё получилось.",
    "Поезд прибывает в семь часов вечера.",
    "سأصل إلى المنزل بعد ساعة تقريبا.",
    "الاجتماع غدا في الساعة العاشرة صباحا.",
    "Θα τα πούμε αύριο το πρωί στο γραφείο.",
    "मैं शाम को घर पहुँच जाऊँगा।",
)


class RoutedEncoder:
    """`latin` for text in Latin script, `other` for the rest; see the module docstring.

    Both are anything with name, dim and encode (an Encoder, a CachedEncoder). `variant`,
    `max_tokens`, `batch_size` and `shape` are the Latin encoder's (what `fraud bench`
    reads: its encoder part runs on English text). `center`: center the multilingual half.
    """

    def __init__(self, latin, other, center: bool = True) -> None:
        self.latin, self.other = latin, other
        self.centered = center
        self._center: np.ndarray | None = None  # computed with the first text of `other`
        suffix = f"~centered{CENTERING_VERSION}" if center else ""
        self.name = f"{latin.name}|{other.name}{suffix}"
        self.dim = int(latin.dim + other.dim)

    @property
    def cache_key(self) -> str:
        keys = [getattr(e, "cache_key", e.name) for e in (self.latin, self.other)]
        centered = f"~centered{CENTERING_VERSION}" if self.centered else ""
        return "routed-by-script(" + ", ".join(keys) + ")" + centered

    def center(self) -> np.ndarray:
        """The multilingual model's mean embedding of CENTERING_TEXTS (see Centering),
        computed once, when the first text in another script comes: a stream in Latin
        script never runs that model, and a lazily loaded one (Encoder's `lazy`) is then
        never loaded."""
        if self._center is None:
            mean = self.other.encode(list(CENTERING_TEXTS)).mean(axis=0)
            self._center = np.asarray(mean, np.float32)
        return self._center

    @property
    def variant(self) -> str:
        return self.latin.variant

    @property
    def max_tokens(self) -> int:
        return self.latin.max_tokens

    @property
    def shape(self) -> dict[str, int]:
        return self.latin.shape

    @property
    def batch_size(self) -> int:
        return self.latin.batch_size

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        self.latin.batch_size = self.other.batch_size = size

    def routes(self, texts: Sequence[str]) -> np.ndarray:
        """True where a text goes to the multilingual model."""
        return np.array([is_other_script(t) for t in texts], dtype=bool)

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], object] | None = None
    ) -> np.ndarray:
        """An (n, dim) float32 array of unit rows, in input order."""
        texts = list(texts)
        other = self.routes(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        split = int(self.latin.dim)
        center = self.center() if self.centered and other.any() else None
        for mask, encoder, cols in (
            (~other, self.latin, slice(0, split)),
            (other, self.other, slice(split, self.dim)),
        ):
            rows = np.flatnonzero(mask)
            if len(rows):
                out[rows, cols] = encoder.encode([texts[i] for i in rows], progress)
        if center is not None:
            half = out[other, split:] - center
            out[other, split:] = half / np.linalg.norm(half, axis=1, keepdims=True).clip(1e-12)
        return out

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        other = self.routes(texts)
        out = np.zeros(len(texts), dtype=np.int64)
        for mask, encoder in ((~other, self.latin), (other, self.other)):
            rows = np.flatnonzero(mask)
            if len(rows):
                out[rows] = encoder.token_counts([texts[i] for i in rows])
        return out
