"""The sentences of a Markdown document, as a reader meets them: prose only, with code
blocks, tables and headings left out, and each list item a sentence of its own at least.

    python tests/prose.py FILE...   # each file's longest sentences, longest first
"""

import re
import sys

FENCE = re.compile(r"^\s*```")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+")
# A sentence ends at . ? or ! before a space, but for "e.g." and "i.e.".
SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.?!])\s+")


def paragraphs(markdown):
    """Runs of prose lines, a list item starting a run of its own."""
    run, fenced = [], False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            yield run
            run = []
        elif fenced or line.lstrip().startswith(("|", "#", "<!--")) or not line.strip():
            yield run
            run = []
        elif LIST_ITEM.match(line):
            yield run
            run = [LIST_ITEM.sub("", line)]
        else:
            run.append(line.strip())
    yield run


def sentences(markdown):
    for lines in paragraphs(markdown):
        text = " ".join(lines).strip()
        for sentence in SENTENCE_END.split(text):
            if sentence.strip():
                yield sentence.strip()


def words(sentence):
    return len(sentence.split())


def main(paths):
    for path in paths:
        with open(path, encoding="utf-8") as file:
            found = sorted(sentences(file.read()), key=words, reverse=True)
        print(f"{path}: {len(found)} sentences, longest {words(found[0]) if found else 0} words")
        for sentence in found[:10]:
            if words(sentence) > 40:
                print(f"  {words(sentence)}: {sentence[:160]}")


if __name__ == "__main__":
    main(sys.argv[1:])
