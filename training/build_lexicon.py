"""WordNet (Debian package ``wordnet-base``) -> interleaved-document JSONL of everyday English vocabulary.

The Debian manuals teach software words; a model distilled on them alone cannot read "sourdough" or "oven"
(the shipped model ranks a bicycle page first for "oven temperature for sourdough bread"). WordNet's glosses
cover the common vocabulary of English in short definitions and example sentences, and each synset makes a
natural VC2L document whose consecutive segments belong together::

    {"text": ["sour bread, sourdough bread", "made with a starter of a small amount of dough in which ...",
              "..."], "img": [[], [], ...], "meta": {"source": "wordnet:n:07686720", "headings": [...]}}

so neighbouring-segment pairs are (words -> definition) and (definition -> example). Synsets are ranked by how
many of their words have them among their sense-tagged meanings (WordNet's ``tagsense_cnt``: senses seen in
its annotated corpus, the common ones), and ``--max-synsets`` keeps the most common, which also sets the share
of lexicon documents when this file is concatenated with the Debian documents. Every 40th synset of that ranking
is held out of training whatever ``--max-synsets`` is: :func:`heldout_synsets` gives them to the evaluation's
word->definition task (``python -m vc2l_retriever.training.evaluate --wordnet /usr/share/wordnet``).

    apt-get install wordnet-base     # WordNet 3.0, Princeton's WordNet licence (permissive; see its copyright)
    python -m vc2l_retriever.training.build_lexicon --out data/lexicon --max-synsets 20000
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_EXAMPLE = re.compile(r'"([^"]+)"')
HELDOUT_EVERY = 40  # every 40th synset by commonness is never trained on


@dataclass
class Synset:
    """One WordNet synset: its words, definition and example sentences."""

    pos: str
    offset: str
    words: list[str]
    definition: str
    examples: list[str]

    def document(self) -> dict[str, object]:
        """The synset as one interleaved document (no images)."""
        texts = [", ".join(self.words), self.definition, *self.examples]
        return {"text": texts, "img": [[] for _ in texts],
                "meta": {"source": f"wordnet:{self.pos}:{self.offset}", "headings": [texts[0]] * len(texts)}}


def parse_data_line(line: str, pos: str) -> Synset | None:
    """A ``data.<pos>`` line -> :class:`Synset` (``None`` for licence header lines and glossless entries)."""
    if line.startswith(" ") or "|" not in line:
        return None
    fields, gloss = line.split("|", 1)
    parts = fields.split()
    count = int(parts[3], 16)  # the word count is hexadecimal
    words = [parts[4 + 2 * k].replace("_", " ") for k in range(count)]
    words = [re.sub(r"\([a-z]+\)$", "", w) for w in words]  # adjective markers such as "(a)" or "(p)"
    examples = [e.strip() for e in _EXAMPLE.findall(gloss)]
    definition = _EXAMPLE.sub("", gloss).strip(" ;\n")
    if not definition:
        return None
    return Synset(pos, parts[0], list(dict.fromkeys(words)), definition, examples)


def tagged_counts(wordnet: Path) -> Counter[tuple[str, str]]:
    """``(pos, offset) -> how many words have this synset among their sense-tagged meanings``."""
    counts: Counter[tuple[str, str]] = Counter()
    for pos, name in POS_FILES.items():
        for line in (wordnet / f"index.{name}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" "):
                continue
            parts = line.split()
            pointers = int(parts[3])
            tagged = int(parts[5 + pointers])
            for offset in parts[6 + pointers: 6 + pointers + tagged]:
                counts[(pos, offset)] += 1
    return counts


def iter_synsets(wordnet: Path) -> Iterator[Synset]:
    """Every synset with a definition, noun, verb, adjective and adverb files in turn."""
    for pos, name in POS_FILES.items():
        for line in (wordnet / f"data.{name}").read_text(encoding="utf-8", errors="replace").splitlines():
            synset = parse_data_line(line, pos)
            if synset is not None:
                yield synset


def ranked_synsets(wordnet: str | Path) -> list[Synset]:
    """Synsets with at least one sense-tagged word, most tagged first (file order breaks ties)."""
    counts = tagged_counts(Path(wordnet))
    synsets = [s for s in iter_synsets(Path(wordnet)) if counts[(s.pos, s.offset)] > 0]
    synsets.sort(key=lambda s: -counts[(s.pos, s.offset)])
    return synsets


def heldout_synsets(wordnet: str | Path) -> list[Synset]:
    """The synsets :func:`build` never writes (every ``HELDOUT_EVERY``-th by commonness), most common first."""
    return ranked_synsets(wordnet)[HELDOUT_EVERY - 1 :: HELDOUT_EVERY]


def build(wordnet: str | Path, out: str | Path, max_synsets: int | None = 20_000) -> dict[str, int]:
    """Write ``out/train.jsonl`` with the ``max_synsets`` most common training synsets; returns counts."""
    out = Path(out)
    synsets = ranked_synsets(wordnet)
    training = [s for k, s in enumerate(synsets) if k % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    kept = training[:max_synsets] if max_synsets else training
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.jsonl", "w", encoding="utf-8") as f:
        for synset in kept:
            f.write(json.dumps(synset.document(), ensure_ascii=False) + "\n")
    manifest = {"source": str(wordnet), "package": "wordnet-base", "tagged_synsets": len(synsets),
                "heldout_synsets": len(synsets) - len(training), "documents": len(kept),
                "segments": sum(2 + len(s.examples) for s in kept)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``build_lexicon [--wordnet DIR] --out DIR [--max-synsets N]``."""
    parser = argparse.ArgumentParser(description="WordNet glosses -> interleaved-document JSONL.")
    parser.add_argument("--wordnet", default="/usr/share/wordnet", help="folder of WordNet's data.* and index.*")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-synsets", type=int, default=20_000, help="most common synsets kept (0: all)")
    args = parser.parse_args(argv)
    manifest = build(args.wordnet, args.out, args.max_synsets or None)
    sys.stdout.write(json.dumps(manifest) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
