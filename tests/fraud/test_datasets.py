import pytest

from fraud.datasets import UNSPECIFIED_CATEGORY, read_labeled_csv
from fraud.errors import DataError


def _write(tmp_path, text: str, name: str = "refs.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_label_mapping_for_public_datasets(tmp_path):
    path = _write(tmp_path, 'label,text\nspam,"WIN a prize, call now"\nham,see you at 5\n')
    rows = read_labeled_csv(path, fraud_labels="spam", legit_labels="ham")
    assert [(r.label, r.category) for r in rows] == [
        ("fraud", UNSPECIFIED_CATEGORY),
        ("legit", None),
    ]
    assert rows[0].text == "WIN a prize, call now"


def test_categories_are_kept_for_frauds(tmp_path):
    path = _write(tmp_path, "text,label,category\nparcel fee,fraud,Delivery\nhi,legit,legit\n")
    rows = read_labeled_csv(path)
    assert [(r.label, r.category) for r in rows] == [("fraud", "delivery"), ("legit", None)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("body,kind\nx,spam\n", "expected a header with columns text,label"),
        ("text,label\nhello,maybe\n", "refs.csv:2: label 'maybe' is neither fraud"),
        ("text,label\n,fraud\n", "refs.csv:2: empty text"),
        ("text,label\n", "no rows after the header"),
    ],
)
def test_bad_csv_is_one_readable_line(tmp_path, content, message):
    with pytest.raises(DataError, match=message) as err:
        read_labeled_csv(_write(tmp_path, content))
    assert "\n" not in str(err.value)


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_labeled_csv(tmp_path / "absent.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("text,label\n£5 prize,spam\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_labeled_csv(bad)


def test_a_label_cannot_be_both(tmp_path):
    with pytest.raises(DataError, match="both fraud and legit"):
        read_labeled_csv(_write(tmp_path, "text,label\nx,spam\n"), "spam", "spam,ham")


def test_the_shipped_seed_set_meets_its_promise():
    from fraud.data import seed_references_path

    rows = read_labeled_csv(seed_references_path())
    frauds = [r for r in rows if r.label == "fraud"]
    legits = [r for r in rows if r.label == "legit"]
    assert len(frauds) >= 150 and len(legits) >= 150
    assert len({r.category for r in frauds}) >= 8
    assert UNSPECIFIED_CATEGORY not in {r.category for r in frauds}
    assert len({r.text for r in rows}) == len(rows)


CHINESE_SCAM_TYPES = {
    "official_impersonation",  # police, prosecutors, courts, social security, tax
    "refund",  # fake customer service: refunds, compensation, "cancel this membership"
    "job_offer",  # task and order-brushing rebates
    "loan",
    "impersonation",  # acquaintances, relatives, bosses, teachers
    "investment",
    "lottery",  # prizes
    "delivery",  # parcel compensation, fake customs and courier fees
}


def test_the_seed_set_has_chinese_frauds_of_every_common_type_and_legit_lookalikes():
    from fraud.data import seed_references_path
    from fraud.encoding.routed import is_other_script
    from fraud.text.normalize import normalize

    rows = read_labeled_csv(seed_references_path())
    chinese = [r for r in rows if is_other_script(r.text)]
    frauds = [r for r in chinese if r.label == "fraud"]
    legits = [r for r in chinese if r.label == "legit"]
    assert len(frauds) >= 100 and len(legits) >= 100
    by_type = {t: sum(r.category == t for r in frauds) for t in CHINESE_SCAM_TYPES}
    assert min(by_type.values()) >= 10, by_type
    assert {r.category for r in frauds} == CHINESE_SCAM_TYPES
    # Distinct, also once normalized (so no two references are one text to the encoder).
    assert len({normalize(r.text) for r in rows}) == len(rows)
    # Legit look-alikes: genuine notices from the same senders the scams pretend to be.
    lookalikes = [r for r in legits if r.text.startswith("【")]
    assert len(lookalikes) >= 50
