"""The text blocklist (docs/FORMATS.md, Blocklist) against the small blocklist folder: one case (or more) per rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmos_triton.guardrail.blocklist import Blocklist, to_ascii
from export.small_blocklist import WORD_LISTS, check_system, lexnames_text, write_small_blocklist


@pytest.fixture(scope="module")
def blocklist_dir(tmp_path_factory) -> Path:
    return write_small_blocklist(tmp_path_factory.mktemp("guardrail") / "blocklist")


@pytest.fixture(scope="module")
def blocklist(blocklist_dir) -> Blocklist:
    return Blocklist(blocklist_dir)


def blocked(blocklist: Blocklist, prompt: str) -> str:
    """The block message; fails the test when the prompt passes."""
    result = blocklist.check(prompt)
    assert not result.safe, f"expected {prompt!r} to be blocked"
    assert result.guardrail == "Blocklist"
    return result.message


def assert_safe(blocklist: Blocklist, prompt: str) -> None:
    result = blocklist.check(prompt)
    assert result.safe, f"expected {prompt!r} to pass, got {result}"


def test_word_lists_read_from_every_file_stripped_without_blanks(blocklist):
    assert blocklist.blocklist_words == ["gore", "bloodbath", "knife", "ied"]  # violence.txt, then weapons.txt
    assert blocklist.whitelist_words == ["led"]
    assert blocklist.exact_match_words == ["gun", "grenade", "nerve gas"]


def test_empty_prompt_is_unsafe(blocklist):
    assert blocked(blocklist, "") == "Input is empty"


def test_benign_robot_prompt_is_safe(blocklist):
    assert_safe(blocklist, "A robot arm picks up a red cube from a wooden table in a bright, tidy lab.")


def test_exact_match_whole_word_only(blocklist):
    assert "Exact Match Word: gun" in blocked(blocklist, "A man holding a GUN")
    assert "Exact Match Word: nerve gas" in blocked(blocklist, "they release nerve \t  gas")  # spaces collapsed
    assert_safe(blocklist, "The show has begun, says Gunther.")  # inside longer words; "gun" is too short to fuzz


def test_exact_match_near_miss_for_long_words(blocklist):
    assert "Partial Match Word: grenade" in blocked(blocklist, "a grennade on the table")  # one extra letter
    assert "Partial Match Word: nerve gas" in blocked(blocklist, "nerves gas")  # two-word window
    # The threshold (len - 0.5) / len admits one insertion only: a substitution or a longer word is too far.
    assert_safe(blocklist, "a holiday in Grenada")
    assert_safe(blocklist, "a glass of grenadine")


def test_lemmatized_plural_is_caught_only_by_the_lemma_path(blocklist):
    prompt = "a drawer full of knives"
    assert blocklist.censor(prompt) == ""  # better_profanity on the raw prompt alone lets it through
    assert blocklist.lemmatize(prompt) == "a drawer full of knife"
    assert "(lemmatized)" in blocked(blocklist, prompt)
    assert "(lemmatized)" in blocked(blocklist, "the gore's colour")  # tokenizer splits "'s" off
    assert_safe(blocklist, "Knives")  # as the original: WordNet lemmas are case-sensitive, so this one slips through


def test_leetspeak_variants_caught_by_substitutions(blocklist):
    for prompt in ("so much g0re", "so much g*re", "a blood bath", "KNIFE"):
        assert "Prompt blocked by censorship: Censored Prompt:" in blocked(blocklist, prompt)
    assert blocked(blocklist, "so much g0re!").endswith("so much ****!")


def test_whitelisted_token_is_restored(blocklist):
    prompt = "a robot with blinking LED lights"
    assert blocklist.profanity.censor(prompt) != prompt  # "led" is an i->l variant of the blocked "ied" ...
    assert_safe(blocklist, prompt)  # ... and the whitelist restores it
    blocked(blocklist, "an ied under the car")  # the listed word itself
    blocked(blocklist, "a 1ed under the car")  # and variants not on the whitelist


def test_non_ascii_runs_become_spaces(blocklist):
    assert to_ascii("caf\u00e9\u2615\u2615 ok") == "caf  ok"
    blocked(blocklist, "\U0001f52agore\U0001f52a everywhere")
    blocked(blocklist, "a caf\u00e9 full of gore")
    blocked(blocklist, "\u00bfa grenade?")
    assert_safe(blocklist, "A na\u00efve robot serves cr\u00e8me br\u00fbl\u00e9e in a caf\u00e9 \u2615\U0001f916")


def test_instances_do_not_share_word_lists(blocklist, blocklist_dir, tmp_path):
    import better_profanity

    other_dir = tmp_path / "blocklist"
    for folder, words in {"custom": "teapot\n", "whitelist": "", "exact_match": "kettle\n"}.items():
        (other_dir / folder).mkdir(parents=True)
        (other_dir / folder / "words.txt").write_text(words)
    (other_dir / "nltk_data").symlink_to(blocklist_dir / "nltk_data")
    other = Blocklist(other_dir)
    assert not other.check("a teapot").safe and other.check("so much gore").safe
    assert blocklist.check("a teapot").safe and not blocklist.check("so much gore").safe
    # The library's module-level object keeps its default list.
    assert better_profanity.profanity.censor("teapot") == "teapot"


def test_small_blocklist_layout(blocklist_dir):
    nltk_data = blocklist_dir / "nltk_data"
    assert sorted(p.name for p in (nltk_data / "tokenizers" / "punkt_tab" / "english").iterdir()) == [
        "abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt",
    ]  # fmt: skip
    lexnames = (nltk_data / "corpora" / "wordnet" / "lexnames").read_text()
    assert lexnames == lexnames_text() and lexnames.splitlines()[3] == "03\tnoun.Tops\t1"
    for folder, files in WORD_LISTS.items():
        assert sorted(p.name for p in (blocklist_dir / folder).iterdir()) == sorted(files)


def test_check_system_names_the_apt_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"apt-get install .*wordnet-base wordnet-sense-index"):
        check_system(tmp_path)


# -- beyond the original: look-alikes, joined and spelled-out words (guardrail.normalise) ----------------------


@pytest.mark.parametrize("prompt", [
    "ｇｏｒｅ in a park",  # full-width: NFKC
    "g\u043ere in a park",  # Cyrillic o: confusables
    "\u0261\u043er\u0435 in a park",  # Latin script g, Cyrillic o and ie
    "g\u01d2re in a park",  # o with caron: accents stripped
    "g\u200bo\u200dre",  # zero-width space and joiner inside the word
    "a nerve-gas attack", "a nerve_gas attack", "a nerve.gas attack",  # joined phrase
    "g.o.r.e", "G O R E", "g-o-r-e",  # spelled out
])
def test_look_alikes_and_rejoined_words_are_blocked(blocklist, prompt):
    assert blocked(blocklist, prompt)


@pytest.mark.parametrize("prompt", [
    "A robot walks through a warehouse full of boxes.", "e-mail me a state-of-the-art robot",
    "I am a U S soldier", "A café on the Champs-Élysées", "Ａ ｒｏｂｏｔ",
])
def test_normalisation_does_not_block_benign_prompts(blocklist, prompt):
    assert_safe(blocklist, prompt)


def test_fold_and_variants_against_hand_written_spellings():
    from cosmos_triton.guardrail.normalise import fold, variants

    assert fold("ｇｏｒｅ") == "gore"
    assert fold("g\u043ere") == "gore"
    assert fold("Caf\u00e9 \u00c9lys\u00e9es") == "Cafe Elysees"
    assert fold("a\u200bb") == "ab"
    assert variants("nerve-gas") == ["nerve-gas", "nerve gas"]
    assert variants("g.o.r.e") == ["g.o.r.e", "g o r e", "gore"]
    assert variants("plain text") == ["plain text"]  # nothing to fold: only the prompt itself is checked
