"""One definition of sentence and clause ends, the same for every splitter: files and requests
(split_sentences), Wyoming's streamed text (complete_sentences) and the first-clause cut."""

from __future__ import annotations

import pytest
from voxfit.server.wyoming import complete_sentences
from voxfit.speaking.clauses import split_first_clause
from voxfit.speaking.text import split_sentences, word_count

SENTENCES = [
    # text, its sentences
    ("One. Two! Three? Four… Five", ["One.", "Two!", "Three?", "Four…", "Five"]),
    ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
    ("Pi is 3.14 today. Yes.", ["Pi is 3.14 today.", "Yes."]),
    ("你好。我很好！你呢？", ["你好。", "我很好！", "你呢？"]),
    ("「はい。」と言った。次", ["「はい。」", "と言った。", "次"]),
    ("Mixed 你好。 And English.", ["Mixed 你好。", "And English."]),
]


@pytest.mark.parametrize("text,sentences", SENTENCES)
def test_files_requests_and_wyoming_streams_cut_at_the_same_sentence_ends(text, sentences):
    assert split_sentences(text, 400) == sentences
    streamed, rest = complete_sentences(text, 4096)
    # A stream speaks what is known to be complete, cut at the same ends; what is still being written waits.
    assert split_sentences("".join(streamed), 400) + ([rest.strip()] if rest.strip() else []) == sentences


CLAUSES = [
    # a long first sentence, and where the first-clause cut falls
    ("When the morning train finally arrived at the station, everyone on the platform cheered loudly.",
     "When the morning train finally arrived at the station,"),
    ("今天的天气非常好，我们一起去公园散步吧，然后回家吃饭。", "今天的天气非常好，"),
    ("昨日は一日中とても忙しかったので、今日はゆっくり休みたいと思います。", "昨日は一日中とても忙しかったので、"),
]


@pytest.mark.parametrize("sentence,head", CLAUSES)
def test_the_first_clause_cut_uses_the_same_clause_marks_in_every_script(sentence, head):
    (cut_head, tail), cut = split_first_clause([sentence])
    assert cut and cut_head == head and f"{cut_head}{tail}".replace(" ", "") == sentence.replace(" ", "")


def test_an_over_long_sentence_is_cut_at_clause_marks_first_in_every_script():
    english = "one two three, four five six; seven eight nine: ten eleven twelve"
    assert split_sentences(english, 20) == ["one two three,", "four five six;", "seven eight nine:", "ten eleven twelve"]
    chinese = "第一部分很长，第二部分也很长，第三部分"
    assert split_sentences(chinese, 8) == ["第一部分很长，", "第二部分也很长，", "第三部分"]


def test_words_are_counted_for_cjk_too():
    assert word_count("three plain words") == 3 and word_count("你好世界") == 4 and word_count("hi 你好") == 3
