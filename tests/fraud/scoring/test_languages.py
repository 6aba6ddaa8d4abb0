"""Input prefixes per model, and Chinese through the shipped (script-routed) encoder."""

import json

import numpy as np
import pytest

from fraud.encoding import input_prefix
from fraud.errors import ConfigError
from tests.fakes import assess


def _model_dir(tmp_path, info: dict | None):
    (tmp_path / "config.json").write_text("{}")
    if info is not None:
        (tmp_path / "fraud_model.json").write_text(json.dumps(info))
    return tmp_path


E5_PREFIXES = {"input_prefix": {"query": "query: ", "passage": "passage: "}}


def test_a_model_without_declared_prefixes_gets_none_whatever_is_asked(tmp_path):
    assert input_prefix(_model_dir(tmp_path, None)) == ("none", "")
    assert input_prefix(_model_dir(tmp_path, None), "query") == ("none", "")


def test_the_model_declares_its_prefixes_and_which_one_to_use(tmp_path):
    assert input_prefix(_model_dir(tmp_path, E5_PREFIXES)) == ("query", "query: ")
    chosen = _model_dir(tmp_path, {**E5_PREFIXES, "use_prefix": "passage"})
    assert input_prefix(chosen) == ("passage", "passage: ")
    assert input_prefix(chosen, "query") == ("query", "query: ")  # a setting overrides it
    assert input_prefix(chosen, "none") == ("none", "")


def test_an_undeclared_prefix_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no 'instruction' input prefix"):
        input_prefix(_model_dir(tmp_path, E5_PREFIXES), "instruction")


@pytest.fixture(scope="module")
def e5(encoder):
    return encoder.other  # the shipped encoder's multilingual model


@pytest.mark.model
class TestRealModels:
    def test_the_multilingual_model_reads_the_prefix_after_normalization(self, e5):
        from transformers import AutoTokenizer

        from fraud.text.normalize import normalize

        assert e5.prefix == "query: " and e5.name.endswith("+query")
        text = "恭喜您中獎了 ，請 點 擊"
        assert e5.model_input(text) == "query: " + normalize(text) == "query: 恭喜您中奖了,请点击"
        tokenizer = AutoTokenizer.from_pretrained(e5.path, local_files_only=True)
        expected = len(tokenizer("query: " + normalize(text))["input_ids"])
        assert e5.token_counts([text]).tolist() == [expected]

    def test_prefixes_change_the_embedding_and_the_name(self, e5):
        from fraud.encoding.encoder import Encoder

        texts = ["您的包裹被扣留，请支付费用", "明天下午三点开会"]
        others = {p: Encoder(e5.path, prefix=p) for p in ("passage", "none")}
        assert {e.name for e in others.values()} == {
            "multilingual-e5-small+passage",
            "multilingual-e5-small",
        }
        assert len({e5.cache_key, *(e.cache_key for e in others.values())}) == 3
        query = e5.encode(texts)
        for encoder in others.values():
            cosine = (query * encoder.encode(texts)).sum(axis=1)
            assert (cosine < 0.9999).all() and (cosine > 0.8).all()

    def test_an_index_built_with_one_prefix_is_refused_by_another(self, e5, tmp_path):
        from fraud.datasets import LabeledText
        from fraud.encoding.encoder import Encoder
        from fraud.errors import IndexMismatchError
        from fraud.index import ReferenceIndex, build_index

        items = [LabeledText("恭喜您中奖了", "fraud", "lottery")]
        build_index(e5, items, "t", {}, progress=False).save(tmp_path)
        passage = Encoder(e5.path, prefix="passage")
        with pytest.raises(IndexMismatchError, match="rebuild it"):
            ReferenceIndex.load(tmp_path, model=passage.name, dim=passage.dim)

    def test_chinese_demo_messages_alert_with_chinese_evidence(self, detector):
        from fraud.encoding.routed import is_other_script
        from workers.producer import read_messages

        demo = [
            m for m in read_messages("fraud/data/demo_messages.jsonl") if is_other_script(m["text"])
        ]
        assert len(demo) >= 10
        verdicts = assess(detector, [m["text"] for m in demo])
        wrong = [
            (m["id"], round(v.score, 3))
            for v, m in zip(verdicts, demo, strict=True)
            if v.is_alert != (m["expected"] == "fraud")
        ]
        assert wrong == []  # the README (Languages): every Chinese demo message right
        for verdict in verdicts:
            for evidence in verdict.evidence:
                reference = detector.index.reference(evidence.reference_id)
                assert is_other_script(reference.text)  # Chinese keys only

    def test_english_scores_are_the_english_models_alone(self, encoder):
        from fraud.encoding.encoder import Encoder

        texts = ["Your parcel is held, pay £1.99", "see you at 5"]
        routed = encoder.encode(texts)
        alone = Encoder(encoder.latin.path, streams=encoder.latin.streams).encode(texts)
        assert np.array_equal(routed[:, : alone.shape[1]], alone)
        assert not routed[:, alone.shape[1] :].any()

    def test_the_multilingual_model_loads_only_when_a_message_needs_it(
        self, encoder, seed_index_dir
    ):
        """A stream in Latin script never loads multilingual-e5-small (its memory: README,
        Performance); the first Chinese message loads it, and is scored as by the encoder
        whose model the seed index loaded."""
        from fraud.config import ScorerSettings, Settings
        from fraud.encoding.encoder import Encoder
        from fraud.encoding.routed import is_other_script
        from fraud.index import ReferenceIndex
        from fraud.scoring import Detector, effective_scorer
        from workers.producer import read_messages

        lazy = Encoder.from_settings(Settings())
        index = ReferenceIndex.load(seed_index_dir, model=lazy.name, dim=lazy.dim)
        detector = Detector(lazy, index, effective_scorer(ScorerSettings(), index))
        english = ["Your parcel is held at the depot, pay £1.99 now", "see you at 5"]
        assess(detector, english)
        assert lazy.latin.loaded and not lazy.other.loaded
        assert not lazy.other.tokenizer_loaded  # 280 MiB: not for a Latin stream either

        demo = [
            m for m in read_messages("fraud/data/demo_messages.jsonl") if is_other_script(m["text"])
        ]
        texts = [m["text"] for m in demo]
        verdicts = assess(detector, texts)
        assert lazy.other.loaded and lazy.other.tokenizer_loaded
        assert [v.is_alert for v in verdicts] == [m["expected"] == "fraud" for m in demo]
        assert np.allclose(lazy.encode(texts + english), encoder.encode(texts + english), atol=1e-6)
