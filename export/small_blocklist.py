"""Write a small blocklist folder in the real `Cosmos-1.0-Guardrail/blocklist` layout, offline and deterministically.

    python -m export.small_blocklist --out DIR      # write it
    python -m export.small_blocklist --check-system # exit 1 (with the apt-get command) if Debian's WordNet is missing

<dir>/custom/*.txt        blocked words, better_profanity style (character substitutions, whole tokens)
<dir>/whitelist/*.txt     words restored after censoring
<dir>/exact_match/*.txt   whole-word regex + near-miss (SequenceMatcher) list
<dir>/nltk_data/corpora/wordnet/            Debian's WordNet 3.0 database + a `lexnames` file (for WordNetLemmatizer)
<dir>/nltk_data/tokenizers/punkt_tab/english/  four empty files: an untrained Punkt model (for nltk.word_tokenize)

The word lists are made up for tests; each word exercises one rule of the blocklist (docs/FORMATS.md, Blocklist).
NLTK cannot download anything here, so its data is assembled from Debian packages (docs/FORMATS.md, Blocklist).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

WORDNET_SRC = Path("/usr/share/wordnet")
DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")
APT_COMMAND = "apt-get install -y --no-install-recommends " + " ".join(DEBIAN_PACKAGES)

# What nltk's WordNetCorpusReader reads (the same set as nltk_data's wordnet.zip, minus its README/citation).
_POS = ("noun", "verb", "adj", "adv")
WORDNET_FILES = (
    *(f"data.{p}" for p in _POS),
    *(f"index.{p}" for p in _POS),
    *(f"{p}.exc" for p in _POS),
    "cntlist.rev",
    "index.sense",  # from wordnet-sense-index
)
WORDNET_LICENSE = Path("/usr/share/doc/wordnet-base/copyright")

# The lexicographer files, in file-number order, from the lexnames(5WN) man page; the category column of nltk's
# `lexnames` file is the syntactic category: 1 noun, 2 verb, 3 adjective, 4 adverb.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
_LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")

# Several files per folder, blank lines and stray spaces on purpose: the reader must take every file, strip lines
# and skip empty ones.
WORD_LISTS: dict[str, dict[str, str]] = {
    "custom": {
        # better_profanity list: "gore" also catches "g0re"/"g*re"; "knife" catches "knives" only via the lemma.
        "violence.txt": "gore\nbloodbath\n\n  knife  \n",
        # "ied" (improvised explosive device): better_profanity's i->l substitution makes it censor "led" too.
        "weapons.txt": "ied\n",
    },
    "whitelist": {"whitelist.txt": "led\n"},  # restores LED, which the "ied" variants would censor
    "exact_match": {
        "exact_match.txt": "gun\ngrenade\n",  # "gun" (< 4 chars): whole word only; "grenade": also near misses
        "phrases.txt": "\nnerve gas\n",  # a two-word entry: matched over two-word windows
    },
}


def missing_system_files(src: Path = WORDNET_SRC) -> list[Path]:
    return [src / name for name in WORDNET_FILES if not (src / name).is_file()]


def check_system(src: Path = WORDNET_SRC) -> None:
    missing = missing_system_files(src)
    if missing:
        raise FileNotFoundError(
            f"Debian's WordNet files are missing ({', '.join(str(p) for p in missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); install them with: {APT_COMMAND}"
            " (or run export/install_system_deps.sh)"
        )


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_LEX_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def write_word_lists(blocklist_dir: Path) -> None:
    for folder, files in WORD_LISTS.items():
        (blocklist_dir / folder).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (blocklist_dir / folder / name).write_text(text)


def write_nltk_data(nltk_dir: Path, src: Path = WORDNET_SRC) -> None:
    check_system(src)
    wordnet = nltk_dir / "corpora" / "wordnet"
    wordnet.mkdir(parents=True, exist_ok=True)
    for name in WORDNET_FILES:
        shutil.copyfile(src / name, wordnet / name)  # content only: no timestamps, so the output is deterministic
    (wordnet / "lexnames").write_text(lexnames_text())
    if WORDNET_LICENSE.is_file():  # WordNet's licence asks for it to travel with the database
        shutil.copyfile(WORDNET_LICENSE, wordnet / "LICENSE")
    punkt = nltk_dir / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True, exist_ok=True)
    for name in PUNKT_FILES:
        (punkt / name).write_text("")


def write_small_blocklist(blocklist_dir: Path) -> Path:
    """Write the word lists and `nltk_data/` into `blocklist_dir` (created if needed) and return it."""
    blocklist_dir = Path(blocklist_dir)
    check_system()  # fail before writing anything
    write_word_lists(blocklist_dir)
    write_nltk_data(blocklist_dir / "nltk_data")
    return blocklist_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="blocklist folder to write")
    group.add_argument("--check-system", action="store_true", help="only check that Debian's WordNet is installed")
    args = parser.parse_args(argv)
    try:
        if args.check_system:
            check_system()
            print(f"ok: WordNet found in {WORDNET_SRC}")
        else:
            print(f"small blocklist: {write_small_blocklist(args.out)}")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
