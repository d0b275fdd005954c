"""How each prompt feature is counted: the keyword and phrase lists, the regexes, and one
extractor per family of features (lines, code and math patterns, tokens, characters, scripts).

``routerdb.features`` owns the contract (``FEATURE_NAMES`` and their order, input checks,
truncation to ``MAX_CHARS``, ``FeatureStats``); this module turns one already-truncated prompt
into a value per feature name with ``feature_values``. Pure Python, no numpy, no torch.

Word matching is case-insensitive and on word boundaries: a prompt is lower-cased and split into
``\\w+`` tokens, and keywords are looked up as whole tokens ("show" is not "how", "classify" is
not "class"). Phrases ("step by step", "do not") are runs of consecutive tokens.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

MAX_AVG_WORD_LEN = 50.0  # cap for avg_word_len, so one giant "word" stays in range


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Keyword features: whole lower-cased \w+ tokens. Inflections are listed explicitly.
_KEYWORDS: dict[str, frozenset[str]] = {
    "log_code_keywords": _words(
        "def return import function class select const var void lambda async await elif "
        "struct enum printf println console null nullptr namespace typedef func fn impl pub "
        "int bool boolean dict len print foreach endif"
    ),
    "log_programming_words": _words(
        "code coding python javascript typescript java sql html css bash shell regex golang "
        "kotlin php ruby swift cpp api debug debugging bug bugs compile compiler algorithm "
        "algorithms script snippet refactor implement implementation"
    ),
    "log_math_words": _words(
        "solve solving equation equations integral integrals integrate derivative "
        "derivatives differentiate calculate calculation compute probability theorem lemma "
        "proof algebra geometry matrix matrices polynomial simplify sqrt logarithm"
    ),
    "log_question_words": _words("what why how when where who whom whose which"),
    "log_reasoning_words": _words(
        "explain explains explained explaining explanation prove proves proved proving "
        "compare compares compared comparing comparison contrast justify derive derivation "
        "analyze analyse analyzing analysing analysis evaluate reasoning reason"
    ),
    "log_format_words": _words(
        "json yaml csv xml table tables tabular markdown list lists bullet bullets "
        "bulleted numbered format formatted formatting heading headings"
    ),
    "log_constraint_words": _words("must should exactly only never always avoid ensure without"),
    "log_creative_words": _words(
        "poem poems poetry poetic story stories storytelling essay essays haiku haikus "
        "limerick sonnet lyrics song songs novel fiction fictional tale tales fable "
        "screenplay verse verses rhyme rhyming narrative creative creatively imagine"
    ),
    "log_translation_words": _words(
        "translate translates translated translating translation translations translator"
    ),
    "log_summary_words": _words(
        "summarize summarise summarizes summarises summarized summarised summarizing "
        "summarising summary summaries summarization summarisation tldr recap condense synopsis"
    ),
    "log_rewrite_words": _words(
        "rewrite rewrites rewriting rewritten rephrase rephrased paraphrase paraphrased "
        "proofread reword grammar"
    ),
}
_LANGUAGES = _words(
    "english french spanish german italian portuguese dutch russian chinese mandarin japanese "
    "korean arabic hindi turkish polish ukrainian swedish greek hebrew vietnamese"
)
# Phrases: consecutive tokens, so "step-by-step" and "tl;dr" match too. Feature -> phrases.
_PHRASES: dict[str, tuple[str, ...]] = {
    "log_reasoning_words": ("step by step", "pros and cons", "show that", "walk me through"),
    "log_constraint_words": ("do not", "don t", "make sure", "at least", "at most", "no more than"),
    "log_translation_words": tuple(f"{p} {lang}" for p in ("into", "to") for lang in _LANGUAGES),
    "log_summary_words": ("tl dr", "key points", "key takeaways", "main points", "in a nutshell"),
    "log_answer_markers": ("which of the following",),
}
# "in 50 words", "3 sentences", "a single paragraph", "ten bullet points": number, then unit.
_LENGTH_NUMBERS = _words("one two three four five six seven eight nine ten twenty fifty single")
_LENGTH_UNITS = _words(
    "word words sentence sentences paragraph paragraphs line lines character characters chars "
    "bullet bullets point points item items token tokens page pages syllable syllables stanza "
    "stanzas"
)

_KEYWORD_INDEX: dict[str, tuple[str, ...]] = {}
for _name, _kws in _KEYWORDS.items():
    for _kw in _kws:
        _KEYWORD_INDEX[_kw] = (*_KEYWORD_INDEX.get(_kw, ()), _name)
# (first, second) token -> ((remaining tokens, feature), ...); every phrase has 2+ tokens.
_PHRASE_INDEX: dict[tuple[str, str], tuple[tuple[tuple[str, ...], str], ...]] = {}
for _name, _phrases in _PHRASES.items():
    for _phrase in _phrases:
        _first, _second, *_rest = _phrase.split()
        _key = (_first, _second)
        _PHRASE_INDEX[_key] = (*_PHRASE_INDEX.get(_key, ()), (tuple(_rest), _name))
_TRIGGERS = frozenset(first for first, _ in _PHRASE_INDEX) | _LENGTH_UNITS
_TOKEN_FEATURES = (*_KEYWORDS, "log_answer_markers", "log_length_limits")
_TOKEN = re.compile(r"\w+")

# Character classes of ASCII characters, for counting with bytes.translate (C speed). They are
# built from the same predicates the non-ASCII path uses, so both paths agree.
_ASCII = "".join(map(chr, range(128)))
_ASCII_SPACE = "".join(filter(str.isspace, _ASCII)).encode()
_ASCII_ALPHA = "".join(filter(str.isalpha, _ASCII)).encode()
_ASCII_UPPER = "".join(filter(str.isupper, _ASCII)).encode()
_ASCII_DIGIT = "".join(filter(str.isdigit, _ASCII)).encode()
_ASCII_PUNCT = "".join(c for c in _ASCII if unicodedata.category(c)[0] in "PS").encode()
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")

# Regexes start with a literal or a character set where possible (re then skips ahead fast);
# "start of a run" lookbehinds keep every scan linear on adversarial input. Case-insensitive
# patterns run on the lower-cased prompt.
_SENTENCE_END = re.compile(r"[.!?](?<![.!?][.!?])[.!?]*(?=\s|$)")
_CJK_SENTENCE_END = re.compile(r"[。！？]+")
_BULLET_LINE = re.compile(r"^[ \t]*[-*•+▪◦‣][ \t]+\S", re.M)
_NUMBERED_LINE = re.compile(r"^[ \t]*\d{1,3}[.)][ \t]+\S", re.M)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+\S", re.M)

# Code.
_CODE_FENCE = re.compile(r"^[ \t]*(?:```|~~~)", re.M)
_INDENTED_LINE = re.compile(r"^(?: {4}|\t)[ \t]*\S", re.M)
_CODE_OPERATOR = re.compile(r"=[=>]|!=|-[>=]|::|&&|\|\||\+[+=]|\*=|/[=>]|<[</]|>>")

# Math.
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Operator symbols, and "-" between digits/brackets ("3-1", "(a) - (b)" is not counted).
_MATH_OPERATOR = re.compile(r"[+=*/^<>×÷±≤≥≠≈∑∏∫√∞∂]|-(?:(?<=[\d)]-)(?=[\d(])|(?<=[\d)] -)(?= [\d(]))")
_LATEX_COMMAND = re.compile(
    r"\\(?:frac|dfrac|tfrac|sqrt|sum|int|iint|oint|prod|lim|infty|alpha|beta|gamma|delta|"
    r"epsilon|varepsilon|theta|lambda|mu|sigma|pi|phi|omega|cdot|times|div|pm|leq?|geq?|neq|"
    r"approx|equiv|mathbb|mathrm|mathbf|mathcal|text|left|right|begin|end|partial|nabla|log|"
    r"ln|sin|cos|tan|binom|vec|hat|bar|overline|subset|subseteq|cup|cap|forall|exists|in|"
    r"to|rightarrow|Rightarrow|quad|ldots|cdots|dots)(?![A-Za-z])|\\[(\[]"
)
# $$...$$ or $...$ whose inner edges are not spaces and not followed by a digit ("$5 and $10").
_DOLLAR_MATH = re.compile(r"\$\$[^$]+\$\$|\$[^\s$](?:[^$\n]*?[^\s$])?\$(?!\d)")
# "=" that is not part of ==, !=, <=, >=, =>, +=, -=, *=, /=, %=, &=, |=, ^=, :=.
_EQUATION = re.compile(r"=(?<![=!<>+\-*/%&|^:]=)(?![=>])")

# Multiple choice: option lines "A) x", "(B) x", "c) x", "D. x", "E: x"; "Answer:" markers.
_CHOICE_LINE = re.compile(r"^[ \t]*(?:\([ \t]*[A-Ja-j][ \t]*\)|[A-Ja-j]\)|[A-J][.:])[ \t]+\S", re.M)
_ANSWER_MARKER = re.compile(r"(?:answer|option|choice)s?[ \t]*:")

# Scripts, matched on runs of non-ASCII letters (ASCII letters are all Latin).
_LATIN_EXT = re.compile(
    r"[\u00aa-\u00ba\u00c0-\u024f\u1e00-\u1eff\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f"
    r"\uff21-\uff3a\uff41-\uff5a]+"
)
_CJK = re.compile(
    r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]+"
)
_CYRILLIC = re.compile(r"[\u0400-\u052f\u1c80-\u1c8f\u2de0-\u2dff\ua640-\ua69f]+")
_ARABIC = re.compile(r"[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]+")
_DEVANAGARI = re.compile(r"[\u0900-\u097f\ua8e0-\ua8ff]+")

# Conversation: role lines ("User:", "### Instruction") and chat-template tokens anywhere.
_TURN_MARKER = re.compile(
    r"^[ \t]*(?:(?:user|assistant|human|ai|system|bot|chatbot|customer|agent)[ \t]*:|"
    r"#{2,}[ \t]*(?:instruction|response|input|output|system|user|assistant)\b)"
    r"|<\|im_start\|>|\[inst\]|<\|(?:user|assistant|system)\|>",
    re.M,
)
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"'()]+")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){0,8}\.[a-z]{2,24}(?![\w-])")


def _count(pattern: re.Pattern[str], text: str) -> int:
    return len(pattern.findall(text))


def _run_chars(pattern: re.Pattern[str], text: str) -> int:
    """Characters covered by the matches of a run pattern (``[...]+``)."""
    return sum(map(len, pattern.findall(text)))


def _in_bytes(raw: bytes, chars: bytes) -> int:
    """How many bytes of ``raw`` are in ``chars``."""
    return len(raw) - len(raw.translate(None, chars))


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def _token_counts(lower: str) -> dict[str, int]:
    """Keyword, phrase and length-limit counts over the \\w+ tokens of the lower-cased prompt."""
    tokens = _TOKEN.findall(lower)
    tally = Counter(tokens)
    counts = dict.fromkeys(_TOKEN_FEATURES, 0)
    for token in tally.keys() & _KEYWORD_INDEX.keys():
        for name in _KEYWORD_INDEX[token]:
            counts[name] += tally[token]
    for i in [i for i, token in enumerate(tokens) if token in _TRIGGERS]:
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        for rest, name in _PHRASE_INDEX.get((token, following), ()):
            if not rest or tuple(tokens[i + 2 : i + 2 + len(rest)]) == rest:
                counts[name] += 1
        if token in _LENGTH_UNITS and i > 0:
            previous = tokens[i - 1]
            if previous in _LENGTH_NUMBERS or previous.isdigit():
                counts["log_length_limits"] += 1
    return counts


def _answer_markers(lower: str) -> int:
    """ "answer:", "options:", "choices:" as whole words (the regex has no leading \\b: speed)."""
    if ":" not in lower:
        return 0
    starts = (m.start() for m in _ANSWER_MARKER.finditer(lower))
    return sum(1 for s in starts if s == 0 or not (lower[s - 1].isalnum() or lower[s - 1] == "_"))


def _char_features(text: str, non_ascii: str) -> dict[str, float]:
    raw = text.encode("ascii", "ignore")  # the ASCII characters; the rest is in non_ascii
    n_chars = len(text)
    n_space = _in_bytes(raw, _ASCII_SPACE) + sum(map(str.isspace, non_ascii))
    n_letters = _in_bytes(raw, _ASCII_ALPHA) + sum(map(str.isalpha, non_ascii))
    n_upper = _in_bytes(raw, _ASCII_UPPER) + sum(map(str.isupper, non_ascii))
    n_digit = _in_bytes(raw, _ASCII_DIGIT) + sum(map(str.isdigit, non_ascii))
    n_punct = _in_bytes(raw, _ASCII_PUNCT) + sum(1 for c in non_ascii if unicodedata.category(c)[0] in "PS")
    n_words = len(text.split())
    return {
        "avg_word_len": min(_share(n_chars - n_space, n_words), MAX_AVG_WORD_LEN),
        "frac_upper": _share(n_upper, n_letters),
        "frac_digit": _share(n_digit, n_chars),
        "frac_punct": _share(n_punct, n_chars),
        "frac_space": _share(n_space, n_chars),
        "log_chars": math.log1p(n_chars),
        "log_words": math.log1p(n_words),
        **_script_features(non_ascii, n_letters),
    }


def _script_features(non_ascii: str, n_letters: int) -> dict[str, float]:
    letters = "".join(filter(str.isalpha, non_ascii))
    latin_ext = _run_chars(_LATIN_EXT, letters)
    cjk = _run_chars(_CJK, letters)
    cyrillic = _run_chars(_CYRILLIC, letters)
    arabic = _run_chars(_ARABIC, letters)
    devanagari = _run_chars(_DEVANAGARI, letters)
    other = len(letters) - latin_ext - cjk - cyrillic - arabic - devanagari
    return {
        "frac_latin": _share(n_letters - len(letters) + latin_ext, n_letters),
        "frac_cjk": _share(cjk, n_letters),
        "frac_cyrillic": _share(cyrillic, n_letters),
        "frac_arabic": _share(arabic, n_letters),
        "frac_devanagari": _share(devanagari, n_letters),
        "frac_other_letters": _share(other, n_letters),
    }


def _line_counts(text: str, non_ascii: str) -> dict[str, int]:
    n_sentences = _count(_SENTENCE_END, text)
    if non_ascii:
        n_sentences += _count(_CJK_SENTENCE_END, non_ascii)
    tail = text.rstrip()[-1:]
    if tail and tail not in ".!?。！？":
        n_sentences += 1  # trailing text without a terminator is a sentence too
    return {
        "log_lines": len(text.splitlines()),
        "log_sentences": n_sentences,
        "log_bullet_lines": _count(_BULLET_LINE, text),
        "log_numbered_lines": _count(_NUMBERED_LINE, text),
        "log_headings": _count(_HEADING, text),
        "log_question_marks": text.count("?") + text.count("？"),
        "log_code_fences": _count(_CODE_FENCE, text),
        "log_choice_lines": _count(_CHOICE_LINE, text),
    }


def _pattern_counts(text: str, lower: str) -> dict[str, int]:
    return {
        "log_braces_semicolons": text.count("{") + text.count("}") + text.count(";"),
        "log_code_operators": _count(_CODE_OPERATOR, text),
        "log_numbers": _count(_NUMBER, text),
        "log_math_operators": _count(_MATH_OPERATOR, text),
        "log_latex_commands": _count(_LATEX_COMMAND, text) if "\\" in text else 0,
        "log_dollar_math": _count(_DOLLAR_MATH, text) if "$" in text else 0,
        "log_equations": _count(_EQUATION, text),
        "log_turn_markers": _count(_TURN_MARKER, lower),
        "log_urls": _count(_URL, lower) if "://" in lower or "www." in lower else 0,
        "log_emails": _count(_EMAIL, lower) if "@" in lower else 0,
    }


def feature_values(text: str) -> dict[str, float]:
    """Every feature of one prompt, keyed by its ``FEATURE_NAMES`` name (in no set order).

    ``text`` is the prompt already cut to ``MAX_CHARS``; ``routerdb.features`` does that.
    """
    lower = text.lower()
    non_ascii = "" if text.isascii() else "".join(_NON_ASCII.findall(text))
    counts = {**_line_counts(text, non_ascii), **_pattern_counts(text, lower)}
    counts.update(_token_counts(lower))
    counts["log_answer_markers"] += _answer_markers(lower)
    values = {name: math.log1p(value) for name, value in counts.items()}
    values["frac_indented_lines"] = _share(_count(_INDENTED_LINE, text), counts["log_lines"])
    values.update(_char_features(text, non_ascii))
    return values
