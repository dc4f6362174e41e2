"""Task readers on tiny fixtures in every supported layout, and every border error naming its file and line."""

import gzip
import re
import shutil
from pathlib import Path

import pytest

from bertkit.tasks import readers as r
from bertkit.tasks.readers import TaskDataError

TASKS = Path(__file__).resolve().parent / "fixtures" / "tasks"


def _where(path, line=None):
    """A regex matching 'path:' or 'path:line:' at the start of a message."""
    return "^" + re.escape(f"{path}:" if line is None else f"{path}:{line}:")


def test_sst2_reads_header_and_keeps_unbalanced_quotes():
    examples = r.read_glue("sst2", TASKS / "sst2_train.tsv")
    assert [e.label for e in examples] == ["0", "1", "1"]
    assert examples[2].text == 'a "quoted fragment '
    assert examples[0].line == 2 and examples[0].pair is None


def test_glue_test_split_reads_without_labels():
    examples = r.read_glue("SST-2", TASKS / "sst2_test.tsv")
    assert [(e.text, e.label) for e in examples] == [
        ("it is a charming journey .", None), ("unflinchingly bleak", None)]


def test_cola_train_has_no_header_and_its_test_file_does():
    train = r.read_glue("cola", TASKS / "cola_train.tsv")
    assert [(e.label, e.line) for e in train] == [("1", 1), ("0", 2)]
    assert train[0].text == "Our friends will not buy this analysis."
    test = r.read_glue("cola", TASKS / "cola_test.tsv")
    assert [(e.text, e.label) for e in test] == [("Bill whistled past the house.", None)]


def test_mrpc_bom_header_and_string_columns():
    examples = r.read_glue("mrpc", TASKS / "mrpc_train.tsv")
    assert [e.label for e in examples] == ["1", "0"]
    assert examples[0].text.startswith("Amrozi accused") and examples[0].pair.startswith("Referring to him")


@pytest.mark.parametrize(
    "name,file,text,pair,label",
    [
        ("rte", "rte_train.tsv", "No Weapons Found in Iraq Yet.", "Weapons Found in Iraq.", "not_entailment"),
        ("qnli", "qnli_dev.tsv", "What came into force after the new constitution?", "The new law came into force.",
         "entailment"),
        ("qqp", "qqp_train.tsv", "Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", "0"),
        ("mnli", "mnli_dev_matched.tsv", "The new rights are nice enough", "Everyone really likes the newest benefits",
         "neutral"),
        ("stsb", "stsb_train.tsv", "A plane is taking off.", "An air plane is taking off.", 5.0),
    ],
)
def test_glue_pair_tasks_use_their_standard_columns(name, file, text, pair, label):
    first = r.read_glue(name, TASKS / file)[0]
    assert (first.text, first.pair, first.label) == (text, pair, label)


def test_glue_label_outside_the_task_list_names_the_line():
    path = TASKS / "sst2_badlabel.tsv"
    with pytest.raises(TaskDataError, match=_where(path, 2) + " label 'maybe' is not a sst2 label"):
        r.read_glue("sst2", path)


def test_glue_train_file_without_label_column_is_an_error():
    path = TASKS / "sst2_test.tsv"
    with pytest.raises(TaskDataError, match=_where(path) + r" no column 'label' \(columns found: index, sentence\)"):
        r.read_glue("sst2", path, has_labels=True)


def test_unknown_glue_task_lists_the_known_ones():
    with pytest.raises(TaskDataError, match="unknown GLUE task 'wnli' .*sst2"):
        r.read_glue("wnli", TASKS / "sst2_train.tsv")


def test_glue_path_finds_task_folder_and_mnli_dev_name(tmp_path):
    (tmp_path / "MNLI").mkdir()
    assert r.glue_path("mnli", tmp_path, "dev") == tmp_path / "MNLI" / "dev_matched.tsv"
    assert r.glue_path("sst2", tmp_path / "SST-2", "train") == tmp_path / "SST-2" / "train.tsv"


def test_csv_with_named_columns_and_quoted_multiline_field():
    examples = r.read_table(TASKS / "reviews.csv", text_column="review", label_column="stars")
    assert [(e.text, e.label, e.line) for e in examples] == [
        ("Great, really great", "pos", 2), ("Line one\nline two", "neg", 3)]


def test_headerless_table_uses_column_indices():
    examples = r.read_table(TASKS / "cola_train.tsv", text_column=3, label_column=1, has_header=False)
    assert examples[1].label == "0"


def test_jsonl_skips_blank_lines_and_keeps_line_numbers():
    examples = r.read_examples(TASKS / "reviews.jsonl")
    assert [(e.text, e.label, e.line) for e in examples] == [("good film", "pos", 1), ("bad film", "neg", 3)]


def test_gzipped_table_reads_like_the_plain_one(tmp_path):
    path = tmp_path / "train.tsv.gz"
    with gzip.open(path, "wb") as f:
        f.write((TASKS / "sst2_train.tsv").read_bytes())
    assert r.read_examples(path, text_column="sentence") == r.read_glue("sst2", TASKS / "sst2_train.tsv")


def test_missing_column_names_file_and_columns_found():
    path = TASKS / "reviews.csv"
    expected = _where(path) + r" no column 'text' \(columns found: review, stars, extra\)"
    with pytest.raises(TaskDataError, match=expected):
        r.read_table(path)


def test_missing_jsonl_key_names_the_line():
    path = TASKS / "missing_key.jsonl"
    with pytest.raises(TaskDataError, match=_where(path, 2) + r" no key 'label' \(keys found: text\)"):
        r.read_jsonl(path)


def test_empty_text_names_the_line():
    path = TASKS / "empty_text.tsv"
    with pytest.raises(TaskDataError, match=_where(path, 3) + " empty text"):
        r.read_table(path, text_column="sentence")


def test_non_numeric_regression_label_names_the_line():
    path = TASKS / "sst2_badlabel.tsv"
    with pytest.raises(TaskDataError, match=_where(path, 2) + " regression label 'maybe' is not a number"):
        r.read_table(path, text_column="sentence", regression=True)


def test_short_row_names_the_line(tmp_path):
    path = tmp_path / "short.tsv"
    path.write_text("a\tb\tlabel\nx\ty\n")
    with pytest.raises(TaskDataError, match=_where(path, 2) + " 2 fields, expected at least 3"):
        r.read_table(path, text_column="a")


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(TaskDataError, match=_where(tmp_path / "nope.tsv") + " file not found"):
        r.read_table(tmp_path / "nope.tsv")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes(b"text\tlabel\ncaf\xe9\t1\n")
    with pytest.raises(TaskDataError, match=_where(latin) + " not UTF-8 text"):
        r.read_table(latin)
    with pytest.raises(TaskDataError, match=_where(TASKS / "not_really.json.gz") + " cannot read"):
        r.read_squad(TASKS / "not_really.json.gz")
    with pytest.raises(TaskDataError, match="unknown table format '.parquet'"):
        r.read_examples(tmp_path / "x.parquet")


def test_check_labels_rejects_a_dev_label_train_never_had():
    path = TASKS / "rte_train.tsv"
    dev = r.read_glue("rte", path)
    r.check_labels(["entailment", "not_entailment"], dev, path)
    with pytest.raises(TaskDataError, match=_where(path, 2) + " label 'not_entailment' never seen in training"):
        r.check_labels(["entailment"], dev, path)


def test_check_labels_looks_at_every_tag():
    path = TASKS / "conll_dev_unseen.txt"
    dev = r.read_conll(path)
    with pytest.raises(TaskDataError, match=_where(path, 4) + " label 'B-LOC' never seen"):
        r.check_labels(["O", "B-ORG", "I-ORG"], dev, path)


def test_squad_v1_skips_answers_whose_start_does_not_match():
    examples, report = r.read_squad(TASKS / "squad_v1.json")
    # q2 loses one of its two answers; q3 loses its only answer and is skipped
    assert [e.id for e in examples] == ["q1", "q2", "q4"]
    assert report.questions == 4 and report.answerable == 3 and report.impossible == 0
    assert report.skipped_answers == 2 and report.skipped_questions == 1
    assert "question q3" in report.mismatches[1]
    q1 = examples[0]
    assert q1.context[q1.answers[0].answer_start :].startswith("Houston,  Texas")
    assert q1.title == "Beyoncé" and len(q1.answers) == 2


def test_squad_v2_gzip_marks_impossible_questions():
    examples, report = r.read_squad(TASKS / "squad_v2.json.gz")
    assert [(e.id, e.is_impossible, len(e.answers)) for e in examples] == [("n1", False, 1), ("n2", True, 0)]
    assert report.impossible == 1 and report.skipped_answers == 0


def test_squad_missing_key_is_named():
    path = TASKS / "squad_broken.json"
    with pytest.raises(TaskDataError, match=_where(path) + " paragraph: missing key 'context'"):
        r.read_squad(path)


def test_conll_skips_docstart_and_splits_on_blank_lines():
    examples = r.read_conll(TASKS / "conll_iob2.txt")
    assert [e.tokens for e in examples] == [("EU", "rejects", "German", "call", "."), ("Peter", "Blackburn")]
    assert examples[0].tags == ("B-ORG", "O", "B-MISC", "O", "O")
    assert examples[1].tags == ("B-PER", "I-PER") and examples[1].line == 9


def test_conll_iob1_is_converted_to_iob2():
    (example,) = r.read_conll(TASKS / "conll_iob1.txt")
    assert example.tags == ("B-PER", "I-PER", "O", "B-PER", "B-PER", "O", "B-LOC", "I-LOC")


def test_conll_malformed_line_and_bad_tag_are_named():
    path = TASKS / "conll_malformed.txt"
    with pytest.raises(TaskDataError, match=_where(path, 2) + " expected a word and a tag, found 'rejects'"):
        r.read_conll(path)
    path = TASKS / "conll_badtag.txt"
    with pytest.raises(TaskDataError, match=_where(path, 2) + " tag 'X-FOO' is not O, B-TYPE or I-TYPE"):
        r.read_conll(path)


def test_reader_accepts_a_copy_with_crlf_line_ends(tmp_path):
    path = tmp_path / "train.txt"
    shutil.copy(TASKS / "conll_iob2.txt", path)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert r.read_conll(path) == r.read_conll(TASKS / "conll_iob2.txt")


@pytest.mark.realdata
@pytest.mark.parametrize("name,folder,count", [("sst2", "SST-2", 67349), ("cola", "CoLA", 8551),
                                               ("mrpc", "MRPC", 3667), ("rte", "RTE", 2490), ("stsb", "STS-B", 5749)])
def test_real_glue_train_files_read_completely(shared_data, name, folder, count):
    assert len(r.read_glue(name, shared_data / folder / "train.tsv")) == count


@pytest.mark.realdata
def test_real_squad_and_conll_read_completely(shared_data):
    examples, report = r.read_squad(shared_data / "squad" / "train-v2.0.json.gz")
    assert (report.answerable, report.skipped_answers, len(examples)) == (86821, 0, 130319)
    assert len(r.read_conll(shared_data / "conll2003" / "train.txt")) == 14041
