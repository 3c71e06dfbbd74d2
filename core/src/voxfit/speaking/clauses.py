"""Sooner first audio when streaming: a long first sentence is spoken clause first.

A streaming run cannot play anything before its first chunk is synthesized,
and the engine takes time in proportion to the chunk (0.49 s for a 23-word
first sentence against 0.28 s for 12 words). So when the *first* chunk is
long, it is cut once, at the earliest clause mark (:data:`voxfit.speaking.text.CLAUSE_MARK`:
comma, semicolon, colon, dash, and their CJK forms) that leaves a few words on each side; the rest of
the text is untouched. No character is lost: head + " " + tail is the chunk.

The seam: the head ends on its clause mark, so the voice closes it with its
own trailing pause, and the tail starts with a short onset silence. With the
embedded default voice (noise off, so durations repeat) that made 0.17-0.26 s
of silence where the voice itself paused 0.28-0.38 s at the same mark, 0.09 s
less on average; :data:`SEAM_PAD_SECONDS` of silence added at the seam
brings it within ~0.05 s of the voice's own pause. Short heads are avoided
(:data:`MIN_HEAD_WORDS`): a comma in a list ("She packed her bags, ...") gets
almost no pause from the voice, and a seam there would stand out.
"""

from __future__ import annotations

from voxfit.speaking.text import CLAUSE_MARK, word_count

#: First chunks shorter than this (in words) are spoken whole: they are quick anyway.
LONG_ENOUGH_WORDS = 12
#: Fewest words before the cut (see the seam above) and after it (a two-word tail sounds clipped).
MIN_HEAD_WORDS = 5
MIN_TAIL_WORDS = 4
#: Silence added at the seam (seconds at length scale 1) to match the voice's own clause pause.
SEAM_PAD_SECONDS = 0.08


def split_first_clause(chunks: list[str]) -> tuple[list[str], bool]:
    """``chunks`` with a long first chunk cut at its earliest clause mark; and whether it was cut."""
    if not chunks or word_count(chunks[0]) < LONG_ENOUGH_WORDS:
        return chunks, False
    first = chunks[0]
    for match in CLAUSE_MARK.finditer(first):
        head, tail = first[: match.end()].strip(), first[match.end() :].strip()
        if word_count(head) < MIN_HEAD_WORDS:
            continue
        if word_count(tail) < MIN_TAIL_WORDS:
            break  # later marks leave even less
        return [head, tail, *chunks[1:]], True
    return chunks, False
