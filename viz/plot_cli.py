"""Write figures to disk: standalone HTML always, PNG where a headless browser is available.

HTML files embed plotly.js inline by default (about 4.7 MB each) so they open offline, with no
network and no side files; pass ``include_plotlyjs="directory"`` to write one shared
``plotly.min.js`` beside them instead.

PNG goes through ``kaleido`` (v1), which is not a dependency of this project: kaleido v1 drives
a Chrome or Chromium it finds on the machine (``BROWSER_PATH``, then ``PATH``: Debian's
``apt-get install chromium`` works) and would otherwise download Chrome, which fails offline.
:func:`png_support` says whether PNG can be written here and why not.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["png_support", "write_figures"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BROWSERS = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
    "chromium-headless-shell",
)


def png_support() -> tuple[bool, str]:
    """Whether PNG export can work here, and a one-line reason.

    Checks that ``kaleido`` imports and that a Chrome/Chromium is findable (it does not start
    one; :func:`write_figures` reports a failure to start it).

    Example:
        >>> ok, why = png_support()
        >>> isinstance(ok, bool) and isinstance(why, str)
        True
    """
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "kaleido is not installed (pip install kaleido)"
    path: str | None = None
    try:
        from choreographer.browsers.chromium import Chromium

        path = Chromium.find_browser(skip_local=False)
    except Exception:  # an older or newer choreographer: fall back to a plain PATH search
        path = os.environ.get("BROWSER_PATH") or next(
            (p for p in map(shutil.which, _BROWSERS) if p), None
        )
    if not path:
        return False, (
            "kaleido found no Chrome/Chromium; install one (apt-get install chromium) or set "
            "BROWSER_PATH"
        )
    return True, f"kaleido with {path}"


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a figure is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_figures(
    figs: Mapping[str, go.Figure],
    out_dir: str | Path,
    *,
    png: bool | Literal["auto"] = "auto",
    include_plotlyjs: bool | str = True,
    width: int = 1400,
    height: int | None = None,
    scale: float = 1.0,
) -> list[Path]:
    """Write each figure as ``<out_dir>/<name>.html`` and, where possible, ``<name>.png``.

    Args:
        figs: file stem -> figure; stems use letters, digits, ``.``, ``_`` and ``-``.
        out_dir: directory, created if missing.
        png: ``"auto"``: PNG when :func:`png_support` says yes, silently none otherwise;
            True: PNG required (ValueError if it cannot be written); False: HTML only.
        include_plotlyjs: passed to ``plotly``'s ``write_html``: True embeds plotly.js (works
            offline), ``"directory"`` writes one shared plotly.min.js, ``"cdn"`` needs a
            network.
        width: PNG width in pixels.
        height: PNG height; default: each figure's own layout height (or 500).
        scale: PNG pixel scale (2 for sharp images on high-DPI screens).

    Returns:
        The paths written: all HTML files in ``figs`` order, then the PNG files.

    Raises:
        ValueError: on no figures, a bad name, something that is not a figure, an unwritable
            directory, or ``png=True`` where PNG cannot be written.

    Example:
        >>> from viz.figures import empty_figure
        >>> paths = write_figures({"empty": empty_figure("no data")}, "/tmp/figs", png=False)
        >>> [p.name for p in paths]
        ['empty.html']
    """
    if not figs:
        raise ValueError("figs is empty; pass name -> go.Figure")
    for name, fig in figs.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"figure name {name!r} is not a safe file stem; use letters, digits, '.', '_' "
                "and '-' (e.g. 'aligned_umap')"
            )
        if not isinstance(fig, go.Figure):
            raise ValueError(f"figs[{name!r}] is a {type(fig).__name__}, not a go.Figure")
    if png not in (True, False, "auto"):
        raise ValueError(f"png must be True, False or 'auto', got {png!r}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create output directory {out}: {err.strerror}") from None

    written: list[Path] = []
    for name, fig in figs.items():
        path = out / f"{name}.html"
        try:
            if include_plotlyjs == "directory":  # plotly copies plotly.min.js beside the file
                fig.write_html(path, include_plotlyjs="directory", full_html=True)
            else:
                _write_atomic(
                    path,
                    lambda tmp, f=fig: f.write_html(
                        tmp, include_plotlyjs=include_plotlyjs, full_html=True
                    ),
                )
        except OSError as err:
            raise ValueError(f"cannot write {path}: {err.strerror}") from None
        written.append(path)

    if png is False:
        return written
    ok, why = png_support()
    if not ok:
        if png is True:
            raise ValueError(f"cannot write PNG: {why}; pass png=False for HTML only")
        return written
    names = list(figs)
    paths = [out / f"{name}.png" for name in names]
    heights = [height or figs[n].layout.height or 500 for n in names]
    try:
        # One call: kaleido starts the browser once for all figures (about 3-4 s).
        pio.write_images(
            [figs[n] for n in names],
            paths,
            format="png",
            width=width,
            height=heights,
            scale=scale,
        )
    except Exception as err:  # kaleido raises many kinds (browser start, timeouts)
        if png is True:
            raise ValueError(f"PNG export failed ({type(err).__name__}: {err})") from None
        return written
    return written + paths
