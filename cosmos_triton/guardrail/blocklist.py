"""The Cosmos-1.0 text blocklist (docs/FORMATS.md, Blocklist): better_profanity on the prompt and on its lemmas, then an
exact-match list with near-miss matching. Checks, order and messages follow the original `blocklist.py`.

Heavy imports (nltk, better_profanity) happen in `Blocklist.__init__`, so importing this module is cheap; the
NLTK data is loaded there too, so the first `check` is as fast as the others and a bad folder fails at start-up.
"""

from __future__ import annotations

import re
import string
from difflib import SequenceMatcher
from pathlib import Path

from cosmos_triton.guardrail.common import GuardrailResult
from cosmos_triton.guardrail.normalise import variants

NAME = "Blocklist"
CUSTOM_DIR, WHITELIST_DIR, EXACT_MATCH_DIR, NLTK_DATA_DIR = "custom", "whitelist", "exact_match", "nltk_data"

# The original's defaults: near misses only for words of >= 4 characters, within half a character.
PARTIAL_MATCH_MIN_CHARS = 4
PARTIAL_MATCH_LETTER_COUNT = 0.5

# better_profanity writes this (x4) in place of a word. The original uses a colour-coded "*"; a private-use
# character does the same job and cannot occur in a prompt, which is pure ASCII by then.
_MARK = "\ue000"
_NON_ASCII = re.compile(r"[^\x00-\x7F]+")
_SPACES = re.compile(r"\s+")


def read_word_lists(folder: Path) -> list[str]:
    """Every line of every file in `folder`, stripped, blank lines skipped (files in name order, for stable
    messages; the original takes os.listdir order, which only changes which word a message names)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"blocklist word-list folder missing: {folder}")
    words: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        words.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return words


def to_ascii(prompt: str) -> str:
    """Each run of non-ASCII characters becomes one space."""
    return _NON_ASCII.sub(" ", prompt)


def normalize(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def partial_match(normalized_prompt: str, normalized_word: str, letter_count: float) -> bool:
    """A window of as many prompt words as `normalized_word` has is within `letter_count` characters of it, by
    SequenceMatcher ratio. With 0.5 this catches one inserted character but no deletion or substitution."""
    prompt_words = normalized_prompt.split()
    n_words = len(normalized_word.split())
    min_ratio = (len(normalized_word) - letter_count) / len(normalized_word)
    for i in range(len(prompt_words) - n_words + 1):
        window = " ".join(prompt_words[i : i + n_words])
        if SequenceMatcher(None, window, normalized_word).ratio() >= min_ratio:
            return True
    return False


class Blocklist:
    """`Blocklist(blocklist_dir).check(prompt)`, with `blocklist_dir` = `Cosmos-1.0-Guardrail/blocklist`."""

    def __init__(
        self,
        blocklist_dir: Path,
        partial_match_min_chars: int = PARTIAL_MATCH_MIN_CHARS,
        partial_match_letter_count: float = PARTIAL_MATCH_LETTER_COUNT,
    ) -> None:
        import nltk
        from better_profanity import Profanity

        blocklist_dir = Path(blocklist_dir)
        self.blocklist_words = read_word_lists(blocklist_dir / CUSTOM_DIR)
        self.whitelist_words = read_word_lists(blocklist_dir / WHITELIST_DIR)
        self.exact_match_words = read_word_lists(blocklist_dir / EXACT_MATCH_DIR)
        self.partial_match_min_chars = partial_match_min_chars
        self.partial_match_letter_count = partial_match_letter_count
        # better_profanity lower-cases the whitelist list it is given in place, and the original then compares
        # against that same (now lower-case) list when restoring: keep the lower-case set.
        self._whitelist = {w.lower() for w in self.whitelist_words}

        # Our own instance rather than the module-level `better_profanity.profanity`, so two Blocklists never share
        # word lists. A fresh Profanity() first loads the default list, as the module-level object did on import in
        # the original; that sets MAX_NUMBER_COMBINATIONS (how many following words a phrase may span) the same way.
        # load_censor_words then replaces the default list (an empty custom list would keep the default one).
        self.profanity = Profanity()
        self.profanity.load_censor_words(custom_words=self.blocklist_words, whitelist_words=list(self._whitelist))

        self._nltk = nltk
        self._add_nltk_path(blocklist_dir / NLTK_DATA_DIR)
        self.lemmatizer = nltk.WordNetLemmatizer()
        self.lemmatize("warm up knives")  # loads WordNet and Punkt now (a few seconds), not on the first request

    def _add_nltk_path(self, nltk_dir: Path) -> None:
        # nltk.data.path is process-global; appended (never downloaded), as in the original, and only once.
        if not nltk_dir.is_dir():
            raise FileNotFoundError(f"blocklist nltk_data folder missing: {nltk_dir}")
        if str(nltk_dir) not in self._nltk.data.path:
            self._nltk.data.path.append(str(nltk_dir))

    # -- the checks, in the original's order ------------------------------------------------------------------

    def check(self, prompt: str) -> GuardrailResult:
        """The original's checks on the prompt, then on its look-alike-folded and re-joined spellings
        (guardrail.normalise): a variant can only add a block."""
        if not prompt:  # as the original: only "" is empty; whitespace goes on through the checks
            return GuardrailResult(False, NAME, "Input is empty")
        for variant in variants(prompt):
            text = to_ascii(variant)
            for blocked in (self._censor_check, self._lemma_check, self._exact_check):
                message = blocked(text)
                if message:
                    return GuardrailResult(False, NAME, message)
        return GuardrailResult(True, NAME, "Input is safe")

    def _censor_check(self, prompt: str) -> str:
        censored = self.censor(prompt)
        return f"Prompt blocked by censorship: Censored Prompt: {censored}" if censored else ""

    def _lemma_check(self, prompt: str) -> str:
        censored = self.censor(self.lemmatize(prompt))
        return f"Prompt blocked by censorship (lemmatized): Censored Prompt: {censored}" if censored else ""

    def _exact_check(self, prompt: str) -> str:
        normalized_prompt = normalize(prompt)
        for word in self.exact_match_words:
            normalized_word = normalize(word)
            if re.search(r"\b" + re.escape(normalized_word) + r"\b", normalized_prompt):
                return f"Prompt blocked by exact match blocklist: Prompt: {prompt}, Exact Match Word: {word}"
            if len(normalized_word) >= self.partial_match_min_chars and partial_match(
                normalized_prompt, normalized_word, self.partial_match_letter_count
            ):
                return (
                    f"Prompt blocked by partial match blocklist: Prompt: {normalized_prompt}, "
                    f"Partial Match Word: {normalized_word}"
                )
        return ""

    # -- building blocks --------------------------------------------------------------------------------------

    def censor(self, prompt: str) -> str:
        """The censored prompt (censored words as ****) if anything stays censored once whitelisted tokens are
        restored, else ""."""
        censored = self._restore_whitelisted(prompt, self.profanity.censor(prompt, censor_char=_MARK))
        return censored.replace(_MARK, "*") if _MARK in censored else ""

    def _restore_whitelisted(self, prompt: str, censored: str) -> str:
        """Put back whitelisted tokens that a substitution variant of a blocked word censored (the whitelist itself
        only removes exact entries from the censor list). As the original, tokens are paired by whitespace-split
        position; a censored multi-word phrase shortens the censored list, where the original would fail with an
        IndexError, so positions past its end are skipped."""
        tokens, censored_tokens = prompt.split(), censored.split()
        for i, token in enumerate(tokens[: len(censored_tokens)]):
            if token.strip(string.punctuation).lower() in self._whitelist:
                censored_tokens[i] = token
        return " ".join(censored_tokens)

    def lemmatize(self, prompt: str) -> str:
        """nltk.word_tokenize, then WordNet's noun lemma of each token (case-sensitive: "Knives" stays), re-joined
        with spaces."""
        return " ".join(self.lemmatizer.lemmatize(token) for token in self._nltk.word_tokenize(prompt))
