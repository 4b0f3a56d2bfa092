"""How much does the gettext cache save? A cached ``gettext_pairs`` call against the extraction.

Run: ``python bench/gettext_speed.py`` (about half a minute on 2 CPU cores; it uses a fresh
temporary cache, so the user's own ``~/.cache/multilingual-kd`` is neither read nor written).

Data: the translation catalogs installed on this machine (``/usr/share/locale/*/LC_MESSAGES``
and Django's), as :mod:`kd.data.gettext_source` reads them; the 12 dev languages.
Peer: the same call with ``cache=False``, which reads and cleans every catalog, in the same run.

The module's docstring quotes ~8.5 s for the extraction and ~0.6 s for a cached call of the dev
languages on the development machine. ``tests/test_data.py`` checks only that a cached call
does not extract again. The last line is machine-readable:
``extract_s=.. first_with_cache_s=.. cached_s=.. cached_speedup=..``
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from timing import timed  # noqa: E402  (bench/timing.py, beside this script)


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["KD_CACHE"] = cache  # read by kd.io.cache_dir at each call
        from kd.data.gettext_source import gettext_pairs
        from kd.langs import DEV_LANGS

        langs = list(DEV_LANGS)
        print(f"cpu cores: {os.cpu_count()}  languages: {','.join(langs)}")
        # The first call also warms the OS's file cache, so the peer is not timed on cold disk.
        first = timed(lambda: gettext_pairs(langs))  # extracts and writes the cache
        extract = timed(lambda: gettext_pairs(langs, cache=False))
        cached = timed(lambda: gettext_pairs(langs), repeat=3)
        n = len(gettext_pairs(langs))
    print(f"{n:,} pairs")
    print(f"extraction, no cache:          {extract:6.2f} s")
    print(f"first call, writing the cache: {first:6.2f} s")
    print(f"cached call (best of 3):       {cached:6.2f} s ({extract / cached:.1f}x faster)")
    print(
        f"extract_s={extract:.2f} first_with_cache_s={first:.2f} cached_s={cached:.3f} "
        f"cached_speedup={extract / cached:.1f}"
    )


if __name__ == "__main__":
    main()
