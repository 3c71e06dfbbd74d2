"""Texts shared by the benchmarks: a short sentence, a paragraph and a ~2,000-word passage."""

SHORT = "Hello there, this is a short sentence."

PARAGRAPH = (
    "The quick brown fox jumped over the lazy dog while the farmer watched from the porch. "
    "He sipped his coffee and wondered whether the rain would arrive before the harvest was finished. "
    "Clouds gathered slowly over the western hills, and the wind carried the smell of wet earth. "
    "By evening the barn doors were closed, the animals were fed, and the house was quiet again."
)

_TOPICS = [
    "The river that runs through the valley has shaped the lives of everyone who lives beside it.",
    "In spring the water rises quickly, and the old stone bridge disappears beneath the current for days.",
    "Farmers plan their planting around the floods, waiting until the fields are dry enough to work.",
    "Children learn early which paths are safe and which ones vanish when the rain comes down hard.",
    "The town library keeps records of every flood for the last two hundred years, written by hand.",
    "Some entries are short, noting only the height of the water and the date it began to fall.",
    "Others describe whole families moving to higher ground, carrying what they could on their backs.",
    "Today there are sensors along the banks that send measurements to a screen in the town hall.",
    "Yet many people still watch the color of the sky and the behavior of the birds before a storm.",
    "They say that the herons leave the marsh a day before the water begins to climb the banks.",
    "Nobody has proven it, but nobody has been willing to ignore the herons either.",
    "In the summer the river is slow and warm, and the whole town seems to gather along its edges.",
]


def passage(words: int = 2000) -> str:
    sentences, count, i = [], 0, 0
    while count < words:
        sentence = _TOPICS[i % len(_TOPICS)]
        if i >= len(_TOPICS):
            sentence = f"Once more, in part {i // len(_TOPICS) + 1}: " + sentence[0].lower() + sentence[1:]
        sentences.append(sentence)
        count += len(sentence.split())
        i += 1
    # Paragraphs of four sentences, one per line (piper's CLI speaks line by line).
    return "\n".join(" ".join(sentences[j : j + 4]) for j in range(0, len(sentences), 4))


TEXTS = {"short sentence": SHORT, "paragraph": PARAGRAPH, "2000-word passage": passage()}
