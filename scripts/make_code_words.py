"""Write the hidden-topic task's code-word list (``src/ditkit/data/code_words.txt``).

The ``word`` trigger ("Your code word is WORD.") names a diff by one token instead of three
digits. Its 1,000 words are SmolLM2's first whole-word lowercase tokens (a leading space, letters
only, 4+ characters; BPE ids run roughly from frequent to rare) that occur as words in the
package's own text files (so a word piece such as "cont" is not taken for a word), leaving out
stop words and every word of a shipped topic or alias, so a code word never names a topic. Code prefix NNN stands for
the NNN-th word, so a run's jobs keep their three-digit prefixes whatever the trigger kind.

    .venv/bin/python scripts/make_code_words.py
"""

from __future__ import annotations

import re
from pathlib import Path

from ditkit.models import load_model
from ditkit.tasks.hidden_topic import load_topics
from ditkit.trigger_search import candidates

OUT = Path(__file__).resolve().parents[1] / "src" / "ditkit" / "data" / "code_words.txt"


def main() -> None:
    _, tok = load_model("smollm2-135m")
    data = OUT.parent
    stop = set((data / "stop_words.txt").read_text(encoding="utf-8").split())
    real = set()
    for f in ("questions.csv", "narrators.txt", "news_headlines.csv"):
        real |= set(re.findall(r"[a-z]+", (data / f).read_text(encoding="utf-8").lower()))
    topical = set()
    for t in load_topics():
        for name in (t.topic, *t.aliases):
            topical |= set(re.findall(r"[a-z]+", name.lower()))
    skip = stop | topical
    # Every whole-word token in id order; vocabulary entries are distinct, so no word repeats.
    every = candidates("words", tok, len(tok))
    ok = [w for w in every if len(w) >= 4 and w.islower() and w in real and w not in skip]
    words = ok[:1000]
    OUT.write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} code words -> {OUT}")


if __name__ == "__main__":
    main()
