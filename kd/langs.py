"""Canonical language codes: ISO 639-1 two-letter codes, with English names.

Every part of the project speaks of languages by one code: ``"de"``, ``"fr"``, ``"zh"``... Input
from elsewhere comes in other spellings, and :func:`normalize_lang` maps them all onto it:

- upper case: ``"DE"`` -> ``"de"``;
- ISO 639-3 (and 639-2/B) codes as Tatoeba uses them: ``"deu"``, ``"cmn"``, ``"ger"`` -> ...;
- gettext / POSIX locale names and BCP 47 tags: ``"de_DE"``, ``"pt_BR"``, ``"zh_CN"``,
  ``"zh-Hans"``, ``"de_DE.UTF-8@euro"``.

Variants that would put a second script under one code are not mapped: Traditional Chinese
(``zh_TW``, ``zh_HK``, ``zh_Hant``), Serbian or Belarusian in Latin script (``sr@latin``,
``sr_Latn``), ``uz@cyrillic``, ``pa_PK``, ``az_IR``... :func:`lang_from_locale` returns ``None``
for them, so that a catalog reader can skip them; :func:`normalize_lang` raises.
``"zh"`` means Mandarin in simplified characters (Tatoeba's ``cmn``, gettext's ``zh_CN``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# code: (English name, the code in Tatoeba / LASER file names, other accepted spellings).
_LANGS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "en": ("English", "eng", ()),
    # The 12 development languages (the languages of ../shared/data/tatoeba-dev).
    "de": ("German", "deu", ("ger",)),
    "fr": ("French", "fra", ("fre",)),
    "es": ("Spanish", "spa", ()),
    "it": ("Italian", "ita", ()),
    "ru": ("Russian", "rus", ()),
    "ja": ("Japanese", "jpn", ()),
    "zh": ("Chinese (Simplified)", "cmn", ("zho", "chi", "zh-cn", "zh-hans", "zh-sg")),
    "ar": ("Arabic", "ara", ("arb",)),
    "nl": ("Dutch", "nld", ("dut",)),
    "pt": ("Portuguese", "por", ()),
    "pl": ("Polish", "pol", ()),
    "tr": ("Turkish", "tur", ()),
    # Other common languages.
    "af": ("Afrikaans", "afr", ()),
    "am": ("Amharic", "amh", ()),
    "as": ("Assamese", "asm", ()),
    "az": ("Azerbaijani", "aze", ("azj",)),
    "be": ("Belarusian", "bel", ()),
    "bg": ("Bulgarian", "bul", ()),
    "bn": ("Bengali", "ben", ()),
    "br": ("Breton", "bre", ()),
    "bs": ("Bosnian", "bos", ()),
    "ca": ("Catalan", "cat", ()),
    "cs": ("Czech", "ces", ("cze",)),
    "cy": ("Welsh", "cym", ("wel",)),
    "da": ("Danish", "dan", ()),
    "el": ("Greek", "ell", ("gre",)),
    "eo": ("Esperanto", "epo", ()),
    "et": ("Estonian", "est", ("ekk",)),
    "eu": ("Basque", "eus", ("baq",)),
    "fa": ("Persian", "pes", ("fas", "per")),
    "fi": ("Finnish", "fin", ()),
    "fy": ("Western Frisian", "fry", ()),
    "ga": ("Irish", "gle", ()),
    "gd": ("Scottish Gaelic", "gla", ()),
    "gl": ("Galician", "glg", ()),
    "gu": ("Gujarati", "guj", ()),
    "he": ("Hebrew", "heb", ("iw",)),
    "hi": ("Hindi", "hin", ()),
    "hr": ("Croatian", "hrv", ()),
    "hu": ("Hungarian", "hun", ()),
    "hy": ("Armenian", "hye", ("arm",)),
    "ia": ("Interlingua", "ina", ()),
    "id": ("Indonesian", "ind", ("in",)),
    "is": ("Icelandic", "isl", ("ice",)),
    "ka": ("Georgian", "kat", ("geo",)),
    "kk": ("Kazakh", "kaz", ()),
    "km": ("Khmer", "khm", ()),
    "kn": ("Kannada", "kan", ()),
    "ko": ("Korean", "kor", ()),
    "ku": ("Kurdish (Kurmanji)", "kur", ("kmr",)),
    "ky": ("Kyrgyz", "kir", ()),
    "lt": ("Lithuanian", "lit", ()),
    "lv": ("Latvian", "lvs", ("lav",)),
    "mk": ("Macedonian", "mkd", ("mac",)),
    "ml": ("Malayalam", "mal", ()),
    "mn": ("Mongolian", "mon", ("khk",)),
    "mr": ("Marathi", "mar", ()),
    "ms": ("Malay", "zsm", ("msa", "may")),
    "my": ("Burmese", "mya", ("bur",)),
    "nb": ("Norwegian Bokmal", "nob", ("no", "nor")),
    "ne": ("Nepali", "nep", ("npi",)),
    "nn": ("Norwegian Nynorsk", "nno", ()),
    "oc": ("Occitan", "oci", ()),
    "or": ("Odia", "ori", ("ory",)),
    "pa": ("Punjabi", "pan", ()),
    "ro": ("Romanian", "ron", ("rum", "mo", "mol")),
    "si": ("Sinhala", "sin", ()),
    "sk": ("Slovak", "slk", ("slo",)),
    "sl": ("Slovenian", "slv", ()),
    "sq": ("Albanian", "sqi", ("alb", "als")),
    "sr": ("Serbian", "srp", ()),
    "sv": ("Swedish", "swe", ()),
    "sw": ("Swahili", "swh", ("swa",)),
    "ta": ("Tamil", "tam", ()),
    "te": ("Telugu", "tel", ()),
    "tg": ("Tajik", "tgk", ()),
    "th": ("Thai", "tha", ()),
    "tk": ("Turkmen", "tuk", ()),
    "tl": ("Tagalog", "tgl", ("fil",)),
    "tt": ("Tatar", "tat", ()),
    "ug": ("Uyghur", "uig", ()),
    "uk": ("Ukrainian", "ukr", ()),
    "ur": ("Urdu", "urd", ()),
    "uz": ("Uzbek", "uzb", ("uzn",)),
    "vi": ("Vietnamese", "vie", ()),
    "xh": ("Xhosa", "xho", ()),
    "yi": ("Yiddish", "yid", ()),
    "zu": ("Zulu", "zul", ()),
}

DEV_LANGS = ("de", "fr", "es", "it", "ru", "ja", "zh", "ar", "nl", "pt", "pl", "tr")
"""The 12 development languages, in the order the project reports them."""

KNOWN_LANGS: tuple[str, ...] = (*DEV_LANGS, "en", *sorted(set(_LANGS) - {*DEV_LANGS, "en"}))
"""Every code the project knows: the dev languages, ``"en"``, then the others alphabetically."""

_ALIASES: dict[str, str] = {}
for _code, (_name, _tatoeba, _others) in _LANGS.items():
    for _alias in (_code, _tatoeba, *_others):
        _ALIASES[_alias] = _code
del _code, _name, _tatoeba, _others, _alias

# Locale variants that change the script (or, for Chinese, the character set): not mapped.
_OTHER_SCRIPT = {
    ("zh", "tw"),
    ("zh", "hk"),
    ("zh", "mo"),
    ("zh", "hant"),
    ("pa", "pk"),
    ("az", "ir"),
}
_SCRIPTS_OK = {("zh", "hans")}  # script subtags that are the code's usual script
_MODIFIERS_OK = {"", "euro"}  # "@euro" only changes the currency symbol

_LOCALE_RE = re.compile(
    r"^(?P<lang>[a-z]{2,3})"
    r"(?:[_-](?P<sub1>[a-z0-9]{2,8}))?"
    r"(?:[_-](?P<sub2>[a-z0-9]{2,8}))?"
    r"(?:\.[\w-]+)?"
    r"(?:@(?P<mod>\w+))?$"
)


def lang_from_locale(name: str) -> str | None:
    """Map a locale name (gettext directory, POSIX locale, BCP 47 tag) onto a project code.

    Returns ``None`` for languages the project does not know and for variants it skips on
    purpose: Traditional Chinese (``zh_TW``, ``zh_HK``, ``zh_Hant``), other-script variants
    (``sr@latin``, ``sr_Latn``, ``uz@cyrillic``, ``pa_PK``) and other ``@`` modifiers
    (``en@quot``, ``ca@valencia``). English variants (``en_GB``) map to ``"en"``.

    Example:
        >>> lang_from_locale("pt_BR"), lang_from_locale("zh_CN"), lang_from_locale("zh_TW")
        ('pt', 'zh', None)
    """
    match = _LOCALE_RE.match(name.strip().lower())
    if match is None:
        return None
    lang, mod = match["lang"], match["mod"] or ""
    if mod not in _MODIFIERS_OK:
        return None
    for sub in (match["sub1"], match["sub2"]):
        if sub is None:
            continue
        if (lang, sub) in _OTHER_SCRIPT:
            return None
        is_script = len(sub) == 4 and sub.isalpha()
        if is_script and (lang, sub) not in _SCRIPTS_OK:
            return None
    return _ALIASES.get(lang)


def _known_codes_text() -> str:
    return ", ".join(KNOWN_LANGS)


def normalize_lang(code: str) -> str:
    """The project's code for a language given as ``"de"``, ``"DE"``, ``"deu"`` or ``"de_DE"``.

    Raises:
        ValueError: the code is unknown, or a variant the project does not map (``zh_TW``).

    Example:
        >>> [normalize_lang(c) for c in ("DE", "deu", "de_DE", "cmn", "zh_CN", "pt_BR")]
        ['de', 'de', 'de', 'zh', 'zh', 'pt']
    """
    if not isinstance(code, str):
        raise ValueError(f"a language code must be a string, got {code!r}")
    text = code.strip().lower()
    if text in _ALIASES:
        return _ALIASES[text]
    mapped = lang_from_locale(text)
    if mapped is not None:
        return mapped
    base = re.split(r"[_.@-]", text, maxsplit=1)[0]
    if base in _ALIASES and text != base:
        raise ValueError(
            f"language variant {code!r} is not mapped onto a project code (it has another "
            "script, character set or spelling); "
            f"use the plain code {_ALIASES[base]!r} if that is what you mean"
        )
    raise ValueError(f"unknown language code {code!r}; known codes: {_known_codes_text()}")


def parse_langs(text: str | Iterable[str]) -> list[str]:
    """Parse a comma-separated list of languages (or a list of codes) into project codes.

    Duplicates are dropped, the order is kept.

    Raises:
        ValueError: the list is empty, or one code is unknown.

    Example:
        >>> parse_langs("de,fr, es,DEU")
        ['de', 'fr', 'es']
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    langs: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"a language code must be a string, got {item!r}")
        if not item.strip():
            continue
        lang = normalize_lang(item)
        if lang not in langs:
            langs.append(lang)
    if not langs:
        raise ValueError("no languages given; pass a comma-separated list such as 'de,fr,es'")
    return langs


def lang_name(code: str) -> str:
    """The English name of a language.

    Example:
        >>> lang_name("de"), lang_name("cmn")
        ('German', 'Chinese (Simplified)')
    """
    return _LANGS[normalize_lang(code)][0]


def tatoeba_code(code: str) -> str:
    """The three-letter code used in Tatoeba / LASER file names (``tatoeba.deu-eng.deu``).

    Example:
        >>> tatoeba_code("de"), tatoeba_code("zh"), tatoeba_code("fa")
        ('deu', 'cmn', 'pes')
    """
    return _LANGS[normalize_lang(code)][1]
