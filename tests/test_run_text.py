"""Text input and splitting for `voxfit run`: engine-agnostic, never truncating."""

from __future__ import annotations

import io

import pytest
from voxfit.errors import UsageError
from voxfit.speaking.text import controls_to_spaces, has_speakable, read_input, split_sentences


def _letters(text: str) -> str:
    return "".join(text.split())


SAMPLES = [
    "Hello there. How are you? I am fine!",
    "First paragraph, one sentence.\n\nSecond paragraph.\nStill second.",
    "A very long sentence without any full stop " * 40,
    "Clauses, many of them; separated by commas, semicolons: and colons, " * 20 + "end.",
    "https://example.com/" + "x" * 1500 + " trailing words.",
    "He said \"Stop.\" Then he left... Numbers: 3.14 and 2,000. Done",
    "-- ... !!! Hello -- ??",
]


@pytest.mark.parametrize("text", SAMPLES)
@pytest.mark.parametrize("max_chars", [40, 400])
def test_split_keeps_every_character_in_order_within_limit(text: str, max_chars: int) -> None:
    chunks = split_sentences(text, max_chars)
    assert chunks, "no chunk for non-empty text"
    assert _letters(" ".join(chunks)) == _letters(text)  # nothing dropped, nothing reordered
    assert all(0 < len(c) <= max_chars for c in chunks), [len(c) for c in chunks]


def test_split_cuts_at_sentence_ends() -> None:
    assert split_sentences("One two. Three four! Five six? Seven", 400) == [
        "One two.", "Three four!", "Five six?", "Seven",
    ]


def test_split_long_sentence_prefers_clause_boundaries() -> None:
    text = ("alpha beta gamma, " * 10).strip()
    chunks = split_sentences(text, 60)
    assert len(chunks) > 1
    assert all(c.endswith(",") or c == chunks[-1] for c in chunks)


def test_has_speakable() -> None:
    assert has_speakable("x")
    assert has_speakable("42")
    assert has_speakable("Grüße")
    assert not has_speakable("?! -- … 🙂")
    assert not has_speakable("   ")


def test_read_input_sources(tmp_path) -> None:
    f = tmp_path / "in.txt"
    f.write_bytes("\ufeffFrom a file.".encode())
    assert read_input(None, str(f)) == "From a file."  # BOM removed
    assert read_input("-", None, stdin=io.BytesIO(b"From stdin.")) == "From stdin."
    assert read_input(None, "-", stdin=io.BytesIO(b"Also stdin.")) == "Also stdin."
    assert read_input("Argument.", None) == "Argument."


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": None, "file": None}, "no text given"),
        ({"text": "a", "file": "b"}, "not both"),
        ({"text": "", "file": None}, "empty"),
        ({"text": "  \n\t ", "file": None}, "empty"),
        ({"text": "?!… --", "file": None}, "nothing speakable"),
        ({"text": "x" * 101, "file": None, "max_chars": 100}, "too long"),
    ],
)
def test_read_input_errors(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        read_input(**kwargs)


def test_read_input_bad_utf8_and_limits(tmp_path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Hello \xff\xfe world")
    with pytest.raises(UsageError, match=r"not valid UTF-8 \(byte 0xff at offset 6\)"):
        read_input(None, str(bad))
    with pytest.raises(UsageError, match="not valid UTF-8"):
        read_input("-", None, stdin=io.BytesIO(b"\xc3\x28"))
    with pytest.raises(UsageError, match="too long"):
        read_input("-", None, max_chars=10, stdin=io.BytesIO(b"a" * 1000))
    with pytest.raises(UsageError, match="not found"):
        read_input(None, str(tmp_path / "missing.txt"))
    with pytest.raises(UsageError, match="is a directory"):
        read_input(None, str(tmp_path))


# -- control characters: whitespace to every engine, whichever way the text came in --------

CONTROLLED = [
    ("Hello\x00world.", ["Hello world."]),  # NUL: the phonemizer's C bridge refuses it
    ("\x1b[1;31mRed\x1b[0m text.", ["Red text."]),  # a colour code pasted from a terminal
    ("\x1b]0;title\x07Titled.", ["Titled."]),  # an OSC window title
    ("Page one.\x0cPage two.", ["Page one.", "Page two."]),  # a form feed from a PDF export
    ("Bell\x07 and del\x7fete.", ["Bell and del ete."]),
    ("C1\x85 next\x9f line.", ["C1 next line."]),
    ("lone\ud800surrogate.", ["lone surrogate."]),
    ("\x1bHello.", ["Hello."]),  # a stray ESC takes no letter with it
]


@pytest.mark.parametrize("text, chunks", CONTROLLED)
def test_split_turns_control_characters_into_spaces(text: str, chunks: list[str]) -> None:
    assert split_sentences(text, 400) == chunks
    assert controls_to_spaces(text).isprintable()


def test_tab_newline_and_format_characters_are_left_alone() -> None:
    text = "a\tb\nc\rd e\u200df \u202eg"
    assert controls_to_spaces(text) == text


@pytest.mark.parametrize("source", ["argument", "file", "stdin"])
def test_read_input_hands_on_no_control_character(tmp_path, source) -> None:
    raw = "Hello\x00 there.\x1b[0m\x0cNext\x7f page."
    if source == "argument":
        got = read_input(raw, None)
    elif source == "file":
        (tmp_path / "in.txt").write_text(raw, encoding="utf-8")
        got = read_input(None, str(tmp_path / "in.txt"))
    else:
        got = read_input("-", None, stdin=io.BytesIO(raw.encode()))
    assert got.split() == ["Hello", "there.", "Next", "page."]
    assert all(ch.isprintable() or ch.isspace() for ch in got) and "\x00" not in got


@pytest.mark.parametrize("text", ["\x00", "\x00\x01\x1b", "\x1b[1;31m\x1b[0m", "\x7f\x85"])
def test_only_controls_is_nothing_speakable(text: str) -> None:
    with pytest.raises(UsageError, match="nothing speakable"):
        read_input(text, None)
    with pytest.raises(UsageError, match="standard input has nothing speakable"):
        read_input("-", None, stdin=io.BytesIO(text.encode()))


def test_argument_with_bytes_the_locale_could_not_decode_is_refused_like_a_file() -> None:
    # "caf\xe9" in Latin-1 reaches Python, in a UTF-8 locale, as "caf\udce9".
    with pytest.raises(UsageError, match=r"the text is not valid UTF-8 \(byte 0xe9 at character 3\)"):
        read_input("caf\udce9", None)
