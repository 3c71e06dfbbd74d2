"""Reading and splitting input text: engine-agnostic, never truncating.

The splitter cuts text into sentence-sized chunks no longer than a limit, so
an engine never sees more than it can handle and audio can be written (or
streamed) sentence by sentence. Every non-space character of the input ends
up in exactly one chunk, in order; only runs of whitespace are normalised.
Control characters count as whitespace (see :func:`controls_to_spaces`), so
no engine ever sees one, whichever way the text came in.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path
from typing import BinaryIO, Optional

from voxfit.errors import UsageError

#: Longest input `voxfit run` accepts at once by default: about 80,000 words,
#: roughly nine hours of speech and a 1.4 GB WAV file. Beyond that the user
#: should split the text (a WAV file cannot exceed 4 GiB anyway).
DEFAULT_MAX_CHARS = 500_000

# The one definition of where sentences and clauses end, for every splitter (files and requests, Wyoming's
# streamed text, the first-clause cut). A sentence ends at . ! ? … followed by whitespace (so "3.14" and
# "e.g." mid-sentence do not end one), or at 。！？ (CJK writes no space after them), in both cases with the
# closing quotes and brackets that follow. A clause ends at , ; : — – followed by whitespace, or at ，、；：.
_CLOSERS = "\"'”’»)\\]」』）"
SENTENCE_END = re.compile(rf"(?:[.!?…]+[{_CLOSERS}]*(?=\s)|[。！？]+[{_CLOSERS}]*)")
CLAUSE_MARK = re.compile(r"(?:[,;:—–](?=\s)|[，、；：])")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SPACE = re.compile(r"\s+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def word_count(text: str) -> int:
    """Words as a listener hears them: space-separated words, and each CJK character (about one syllable)."""
    cjk = len(_CJK.findall(text))
    return len(_CJK.sub(" ", text).split()) + cjk

# Control characters mean nothing to a voice, and they arrive by accident: ANSI
# colour codes pasted from a terminal, form feeds from a PDF export, a NUL from
# a badly converted file. Refusing the text would make the user clean it by hand
# for no gain, and deleting them would glue the words on either side together,
# so they become spaces. That covers C0 controls other than tab, newline and CR,
# DEL, C1 controls (U+0080-U+009F), and lone surrogates (no encoder can pass
# them to a phonemizer). A terminal escape sequence (ESC [ 1 ; 31 m, an OSC
# title, CSI as U+009B) becomes one space as a whole: only its ESC would leave
# "[1;31m" to be read out. Format characters (zero-width joiners, bidi marks)
# stay: they are part of how some scripts are written.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)"  # OSC, only when terminated: titles, links
    # Charset and cursor-save escapes; never ESC + letter, where a stray ESC would take a word's first letter.
    r"|\x1b(?:[ -/]+[0-~]|[0-9=<>])"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def controls_to_spaces(text: str) -> str:
    """The text with every control character and terminal escape sequence replaced by a space."""
    return _CONTROL.sub(" ", _ESCAPE_SEQUENCE.sub(" ", text))


def has_speakable(text: str) -> bool:
    """True if the text holds at least one letter or digit (something a voice can say)."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def _pack(pieces: list[str], max_chars: int, sep: str = " ") -> list[str]:
    """Greedily join pieces (each already <= max_chars) into chunks <= max_chars."""
    out: list[str] = []
    current = ""
    for piece in pieces:
        if not current:
            current = piece
        elif len(current) + len(sep) + len(piece) <= max_chars:
            current = f"{current}{sep}{piece}"
        else:
            out.append(current)
            current = piece
    if current:
        out.append(current)
    return out


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """A sentence longer than max_chars: cut at clause marks, then spaces, then hard."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    for clause in _clauses(sentence):
        if len(clause) <= max_chars:
            pieces.append(clause)
            continue
        for word in clause.split(" "):
            if len(word) <= max_chars:
                pieces.append(word)
            else:  # one "word" longer than the limit (a URL, a run of digits): cut it
                pieces.extend(word[i : i + max_chars] for i in range(0, len(word), max_chars))
    return _pack([p for p in pieces if p], max_chars)


def _clauses(sentence: str) -> list[str]:
    """Cut after each clause mark (the space after it goes)."""
    out, start = [], 0
    for match in CLAUSE_MARK.finditer(sentence):
        out.append(sentence[start : match.end()].strip())
        start = match.end()
    out.append(sentence[start:].strip())
    return [c for c in out if c]


def _sentences(paragraph: str) -> list[str]:
    """Cut after each sentence end (closing quotes and brackets stay with their sentence)."""
    out, start = [], 0
    for match in SENTENCE_END.finditer(paragraph):
        out.append(paragraph[start : match.end()])
        start = match.end()
    out.append(paragraph[start:])
    return out


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Split text into chunks of one sentence each (longer ones cut to max_chars).

    Nothing is dropped: joining the chunks with spaces gives the input with
    its whitespace (control characters included) normalised. Chunks without
    anything speakable (a stray "--" between paragraphs) are merged into a
    neighbour, not discarded.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    text = controls_to_spaces(text)  # every caller's text, not only what read_input saw
    chunks: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = _SPACE.sub(" ", paragraph).strip()
        if not paragraph:
            continue
        for sentence in _sentences(paragraph):
            sentence = sentence.strip()
            if sentence:
                chunks.extend(_split_long(sentence, max_chars))
    # Keep unspeakable fragments (punctuation only) with a neighbour so no character is lost.
    merged: list[str] = []
    for chunk in chunks:
        if merged and not has_speakable(chunk) and len(merged[-1]) + 1 + len(chunk) <= max_chars:
            merged[-1] = f"{merged[-1]} {chunk}"
        elif merged and not has_speakable(merged[-1]) and len(merged[-1]) + 1 + len(chunk) <= max_chars:
            merged[-1] = f"{merged[-1]} {chunk}"
        else:
            merged.append(chunk)
    return merged


def _decode(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{where} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it first, e.g. iconv -t UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


# Python hands over command-line bytes that are not valid in the locale's
# encoding as U+DC80-U+DCFF ("surrogateescape"). Those are the same broken
# bytes a file is refused for, so the argument is refused the same way.
_ESCAPED_BYTE = re.compile(r"[\udc80-\udcff]")


def _check_argument_bytes(text: str, where: str) -> None:
    bad = _ESCAPED_BYTE.search(text)
    if bad:
        raise UsageError(
            f"{where} is not valid UTF-8 (byte 0x{ord(bad.group()) - 0xDC00:02x} at character {bad.start()}); "
            "check the terminal's encoding, or pass the text with -f FILE"
        )


def _too_long(n_chars: int, max_chars: int, where: str) -> UsageError:
    return UsageError(
        f"{where} is too long ({n_chars:,}+ characters; voxfit run takes at most {max_chars:,} at once, "
        "about 80,000 words): split the text into several runs or raise --max-chars"
    )


def _read_limited(stream: BinaryIO, max_chars: int, where: str) -> str:
    # UTF-8 needs at most 4 bytes a character: reading a little past that bound
    # tells "too long" without reading an endless stream into memory.
    limit = max_chars * 4 + 4
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise _too_long(max_chars + 1, max_chars, where)
    text = _decode(data, where)
    if len(text) > max_chars:
        raise _too_long(len(text), max_chars, where)
    return text


def read_input(
    text: Optional[str], file: Optional[str], max_chars: int = DEFAULT_MAX_CHARS, stdin: Optional[BinaryIO] = None
) -> str:
    """The text to speak, from exactly one of: an argument, a file, stdin ("-").

    Raises :class:`UsageError` (one line) for a missing source, two sources,
    an unreadable file, invalid UTF-8, text over ``max_chars``, empty or
    whitespace-only text, and text with nothing speakable in it.
    """
    if text is not None and file is not None:
        raise UsageError("give the text either as an argument or with -f FILE, not both")
    if text is None and file is None:
        raise UsageError('no text given: voxfit run "TEXT", voxfit run -f FILE, or voxfit run - (read stdin)')
    if file == "-" or text == "-":
        where = "standard input"
        result = _read_limited(stdin or sys.stdin.buffer, max_chars, where)
    elif file is not None:
        path = Path(file).expanduser()
        where = f"input file {path}"
        if path.is_dir():
            raise UsageError(f"{where} is a directory")
        try:
            with path.open("rb") as handle:
                result = _read_limited(handle, max_chars, where)
        except FileNotFoundError:
            raise UsageError(f"{where} not found") from None
        except PermissionError:
            raise UsageError(f"{where} is not readable (permission denied)") from None
        except OSError as exc:
            raise UsageError(f"{where} cannot be read: {exc.strerror or exc}") from None
    else:
        assert text is not None
        where = "the text"
        if len(text) > max_chars:
            raise _too_long(len(text), max_chars, where)
        _check_argument_bytes(text, where)
        result = text
    if not result.strip():
        raise UsageError(f"{where} is empty: nothing to say")
    result = controls_to_spaces(result)
    if not has_speakable(result):
        raise UsageError(f"{where} has nothing speakable in it (no letters or digits)")
    return result
