"""Plotly figures for the distillation demo: pure functions, data in, ``go.Figure`` out.

Every function validates its input and raises ``ValueError`` with a message saying what to
change; the app shows such a message with :func:`empty_figure`.

Trace-count conventions (what tests and callers may rely on):

- :func:`aligned_scatter`: per model, in the order models first appear in the frame: one line
  trace (when ``line_to`` is not None), then one scatter trace per language, in the frame's
  language order with ``line_to`` moved first. Every model gets every language's trace (empty
  if that model has no rows of it), so ``len(fig.data) == n_models * (n_langs + 1)``
  (``n_models * n_langs`` with ``line_to=None``).
- :func:`similarity_heatmaps`: one heatmap trace per matrix, in dict order.
- :func:`training_curves`: the loss trace, then one accuracy trace per language (first
  appearance order), then one horizontal line trace per reference (dict order):
  ``1 + n_langs + n_references``.
- :func:`accuracy_bars`: one bar trace per model/stage, in first appearance order.
- :func:`teacher_space` and every frame of :func:`teacher_space_animation`: the teacher's
  anchors, then one line trace per student language, then one marker trace per student
  language (first appearance order over the whole frame): ``1 + 2 * n_langs``.
- :func:`empty_figure`: no traces, one annotation.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "accuracy_bars",
    "aligned_scatter",
    "empty_figure",
    "language_colors",
    "similarity_heatmaps",
    "teacher_space",
    "teacher_space_animation",
    "training_curves",
]

ANCHOR_COLOR = "#1f1f1f"
LINE_COLOR = "rgba(110, 110, 110, 0.35)"
_PALETTE = list(dict.fromkeys(plotly.colors.qualitative.Plotly + plotly.colors.qualitative.Dark24))
_HOVER_WRAP = 80


# ----------------------------------------------------------------------------- helpers


def _require_columns(df: object, columns: Sequence[str], name: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name} lacks column(s) {missing}; it needs {list(columns)}, has {list(df.columns)}"
        )
    return df


def _numeric(series: pd.Series, name: str, *, allow_nan: bool = False) -> np.ndarray:
    try:
        arr = pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"column {name!r} must be numeric") from None
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"column {name!r} has {int(bad.sum())} non-finite value(s) (first at row "
            f"{int(np.flatnonzero(bad)[0])}); drop or recompute them"
        )
    return arr


def _hover_text(sentence: str) -> str:
    """HTML-escaped sentence, broken with <br> every ~80 characters so hovers stay narrow."""
    text = str(sentence)
    if len(text) > _HOVER_WRAP:
        return "<br>".join(html.escape(line) for line in textwrap.wrap(text, _HOVER_WRAP))
    return html.escape(text)


def _plain(value: object) -> object:
    """A numpy scalar as the Python number it holds (for readable customdata)."""
    return value.item() if isinstance(value, np.generic) else value


def _order(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values.astype(str)))


def language_colors(langs: Sequence[str], *, anchor: str | None = "en") -> dict[str, str]:
    """Map languages to colours: ``anchor`` near-black, the others a qualitative palette.

    The mapping depends only on the order of ``langs``, so passing the same list gives every
    figure the same colours.

    Example:
        >>> language_colors(["en", "de", "fr"])["en"]
        '#1f1f1f'
    """
    colors: dict[str, str] = {}
    i = 0
    for lang in dict.fromkeys(langs):
        if lang == anchor:
            colors[lang] = ANCHOR_COLOR
        else:
            colors[lang] = _PALETTE[i % len(_PALETTE)]
            i += 1
    return colors


# ----------------------------------------------------------------------------- figures


def aligned_scatter(
    df: pd.DataFrame,
    *,
    line_to: str | None = "en",
    title: str | None = None,
    height: int = 480,
) -> go.Figure:
    """Aligned-space scatter: one facet per model, shared axes, colour by language.

    Thin grey lines join each translation (a row whose ``lang`` is not ``line_to``) to the
    ``line_to`` row with the same ``pair_id`` in the same model, so a well-distilled student
    shows short lines and an untrained one long lines. If a model has several ``line_to`` rows
    with one ``pair_id``, the first is used; translations with no such row get no line.

    Args:
        df: long-form frame with columns ``x, y, lang, model, sentence, pair_id``, e.g. from
            :func:`viz.project.project_frame` (one fit, so all facets share coordinates).
        line_to: the anchor language lines go to (drawn as larger diamonds); None: no lines.
        title: figure title.
        height: figure height in pixels.

    Returns:
        A figure with ``n_models * (n_langs + 1)`` traces (see the module docstring); each
        language trace has ``text`` = the HTML-escaped sentences and
        ``customdata`` = rows of ``[lang, model, pair_id]``, shown on hover.

    Raises:
        ValueError: on missing columns, no rows, or non-finite coordinates.

    Example:
        >>> df = pd.DataFrame({"x": [0, 1, 0, 0.1], "y": [0, 1, 0, 0.1],
        ...                    "lang": ["en", "de"] * 2, "model": ["teacher"] * 2 + ["student"] * 2,
        ...                    "sentence": ["Hi", "Hallo"] * 2, "pair_id": [0, 0, 0, 0]})
        >>> len(aligned_scatter(df).data)  # 2 models x (1 line trace + 2 languages)
        6
    """
    _require_columns(df, ["x", "y", "lang", "model", "sentence", "pair_id"], "df")
    if len(df) == 0:
        raise ValueError("df has no rows; project at least two sentences first")
    x = _numeric(df["x"], "x")
    y = _numeric(df["y"], "y")
    lang = df["lang"].astype(str).to_numpy()
    model = df["model"].astype(str).to_numpy()
    pair = df["pair_id"].to_numpy()
    sentence = df["sentence"].astype(str).to_numpy()

    models = _order(df["model"])
    langs = _order(df["lang"])
    if line_to is not None and line_to in langs:
        langs.remove(line_to)
        langs.insert(0, line_to)
    colors = language_colors(langs, anchor=line_to)

    fig = make_subplots(
        rows=1,
        cols=len(models),
        shared_xaxes="all",
        shared_yaxes="all",
        subplot_titles=models,
        horizontal_spacing=0.02 if len(models) > 1 else 0.0,
    )
    traces: list[go.Scatter] = []
    for col, name in enumerate(models, start=1):
        axes = {"xaxis": f"x{col}" if col > 1 else "x", "yaxis": f"y{col}" if col > 1 else "y"}
        in_model = model == name
        if line_to is not None:
            anchors: dict[object, int] = {}
            for i in np.flatnonzero(in_model & (lang == line_to)):
                anchors.setdefault(pair[i], int(i))
            src = [i for i in np.flatnonzero(in_model & (lang != line_to)) if pair[i] in anchors]
            dst = [anchors[pair[i]] for i in src]
            # Segments [translation, anchor, NaN] flattened: NaN breaks the line between pairs.
            seg_x = np.column_stack([x[src], x[dst], np.full(len(src), np.nan)]).ravel()
            seg_y = np.column_stack([y[src], y[dst], np.full(len(src), np.nan)]).ravel()
            traces.append(
                go.Scatter(
                    x=seg_x,
                    y=seg_y,
                    mode="lines",
                    line={"color": LINE_COLOR, "width": 0.8},
                    hoverinfo="skip",
                    name=f"translation \u2192 {line_to}",
                    legendgroup="__lines__",
                    showlegend=col == 1,
                    **axes,
                )
            )
        for code in langs:
            rows = np.flatnonzero(in_model & (lang == code))
            anchor = code == line_to
            traces.append(
                go.Scatter(
                    x=x[rows],
                    y=y[rows],
                    mode="markers",
                    name=code,
                    legendgroup=code,
                    showlegend=col == 1,
                    marker={
                        "color": colors[code],
                        "size": 8 if anchor else 6,
                        "symbol": "diamond" if anchor else "circle",
                        "opacity": 0.85,
                        "line": {"width": 0},
                    },
                    text=np.asarray([_hover_text(s) for s in sentence[rows]], dtype=object),
                    customdata=pair[rows],
                    hovertemplate=(
                        f"%{{text}}<br><i>lang</i> {html.escape(code)} \u00b7 <i>model</i> "
                        f"{html.escape(name)} \u00b7 <i>pair</i> %{{customdata}}<extra></extra>"
                    ),
                    **axes,
                )
            )
    fig.add_traces(traces)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_layout(
        title=title,
        height=height,
        legend={
            "title": {"text": "language"},
            "itemsizing": "constant",
            "orientation": "h",
            "x": 0.5,
            "xanchor": "center",
            "y": 0,
            "yanchor": "top",
        },
        plot_bgcolor="white",
        margin={"l": 20, "r": 20, "t": 60 if title else 40, "b": 20},
        hoverlabel={"align": "left"},
    )
    return fig


def similarity_heatmaps(
    matrices: Mapping[str, np.ndarray],
    labels: Sequence[str],
    *,
    zmin: float | None = None,
    zmax: float = 1.0,
    show_values: bool | None = None,
    title: str | None = None,
    label_chars: int = 28,
    per_row: int = 2,
) -> go.Figure:
    """Cosine-similarity matrices side by side with one shared colour scale.

    Args:
        matrices: model name -> (n, n) cosine matrix of the same n sentences (see
            :func:`viz.metrics.cosine_matrix`), in the order to show them.
        labels: the n sentences; axis labels are cut to ``label_chars`` characters, the full
            sentences are in the hover.
        zmin: bottom of the shared colour scale; default ``min(-0.2, smallest value)``.
        zmax: top of the shared colour scale (1.0: cosine's maximum).
        show_values: write each value in its cell; default: when n <= 20 (smaller type past
            12 sentences, so the numbers stay in their cells); hovering shows them always.
        title: figure title.
        label_chars: longest axis label.
        per_row: panels a row; more matrices wrap onto further rows (four models: a 2 x 2
            grid, each panel half the width instead of a quarter).

    Returns:
        One ``go.Heatmap`` per matrix (``z`` is the matrix, row i = ``labels[i]``, drawn top
        to bottom), all on ``layout.coloraxis`` with ``cmin=zmin, cmax=zmax``.

    Raises:
        ValueError: on no matrices, a non-square or wrongly sized matrix, or NaN/inf values.

    Example:
        >>> m = np.array([[1.0, 0.5], [0.5, 1.0]])
        >>> fig = similarity_heatmaps({"teacher": m, "student": m}, ["Hi", "Hallo"])
        >>> len(fig.data), fig.layout.coloraxis.cmax
        (2, 1.0)
    """
    if not matrices:
        raise ValueError("matrices is empty; pass at least one model -> (n, n) cosine matrix")
    n = len(labels)
    if n < 1:
        raise ValueError("labels is empty; pass one label per row of the matrices")
    arrays: dict[str, np.ndarray] = {}
    for name, mat in matrices.items():
        try:
            arr = np.asarray(mat, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"matrix of {name!r} must be numeric") from None
        if arr.shape != (n, n):
            raise ValueError(
                f"matrix of {name!r} has shape {arr.shape} but there are {n} labels; pass an "
                f"({n}, {n}) similarity matrix per model"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"matrix of {name!r} has NaN or inf; recompute the similarities")
        arrays[str(name)] = arr
    lowest = min(float(a.min()) for a in arrays.values())
    if zmin is None:
        zmin = min(-0.2, math.floor(lowest * 10) / 10)
    if not zmin < zmax:
        raise ValueError(f"zmin ({zmin}) must be below zmax ({zmax})")
    if show_values is None:
        show_values = n <= 20
    cell_font = {"size": 12 if n <= 12 else 9}

    full = [str(s) for s in labels]
    short = [s if len(s) <= label_chars else s[: label_chars - 1] + "\u2026" for s in full]
    escaped = [html.escape(s) for s in full]
    hover = np.empty((n, n, 2), dtype=object)
    hover[:, :, 0] = np.asarray(escaped, dtype=object)[:, None]
    hover[:, :, 1] = np.asarray(escaped, dtype=object)[None, :]
    ticks = list(range(n))  # integer positions: two labels cut to the same text stay apart

    if per_row < 1:
        raise ValueError(f"per_row must be at least 1, got {per_row}")
    names = list(arrays)
    cols = min(per_row, len(names))
    rows = math.ceil(len(names) / cols)
    # Each row of panels as tall as one row used to be, plus room for the next row's labels.
    row_height = max(360, 28 * n + 200) if n <= 30 else 900
    fig = make_subplots(
        rows=rows,
        cols=cols,
        shared_yaxes="all",
        subplot_titles=names,
        horizontal_spacing=0.03 if cols > 1 else 0.0,
        # Room for the next row's titles only: a panel with one below it leaves its sentence
        # labels to that one (same sentences, same order).
        vertical_spacing=60 / (row_height * rows) if rows > 1 else 0.0,
    )
    for i, name in enumerate(names):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Heatmap(
                z=arrays[name],
                x=ticks,
                y=ticks,
                coloraxis="coloraxis",
                customdata=hover,
                hovertemplate=(
                    "%{customdata[0]}<br>vs %{customdata[1]}<br>cos = %{z:.3f}"
                    f"<extra>{html.escape(name)}</extra>"
                ),
                texttemplate="%{z:.2f}" if show_values else None,
                textfont=cell_font,
                name=name,
            ),
            row=row,
            col=col,
        )
    fig.update_xaxes(tickvals=ticks, ticktext=short, tickangle=-45, showgrid=False)
    fig.update_yaxes(tickvals=ticks, ticktext=short, autorange="reversed", showgrid=False)
    for i in range(len(names)):
        row, col = i // cols + 1, i % cols + 1
        if col > 1:
            fig.update_yaxes(showticklabels=False, row=row, col=col)
        if i + cols < len(names):
            fig.update_xaxes(showticklabels=False, row=row, col=col)
    fig.update_layout(
        title=title,
        coloraxis={
            "colorscale": "Viridis",
            "cmin": zmin,
            "cmax": zmax,
            "colorbar": {"title": {"text": "cosine"}},
        },
        height=row_height * rows,
        plot_bgcolor="white",
    )
    return fig


def training_curves(
    history: pd.DataFrame,
    accuracy: pd.DataFrame | None = None,
    references: Mapping[str, float] | None = None,
    *,
    title: str | None = None,
    log_loss: bool = False,
    smooth: int = 0,
) -> go.Figure:
    """Training loss and per-language dev accuracy against step, with reference levels.

    Input format (both long-form, so they grow by appending one record per event):

    - ``history``: one row per logged training step, columns ``step`` (int) and ``loss``
      (float; NaN rows are skipped). Zero rows is fine (nothing logged yet).
    - ``accuracy``: one row per (evaluation step, language), columns ``step``, ``lang``,
      ``accuracy`` in 0..1 (e.g. ``mean_accuracy`` of translation retrieval on dev pairs).
      Add a ``lang`` such as ``"mean"`` for an average line.
    - ``references``: label -> accuracy level, drawn as dashed horizontal lines over the step
      range on the accuracy panel, e.g. ``{"teacher (en-en)": 0.97, "untrained student":
      0.41}``.

    Args:
        history: the loss log, as above.
        accuracy: the dev-accuracy log, as above, or None.
        references: reference accuracy levels, or None.
        title: figure title.
        log_loss: draw the loss on a log axis.
        smooth: > 1 adds the loss's trailing mean over that many logged steps as a second
            trace ("loss, smoothed"), the raw loss drawn faint behind it: one batch's loss is
            noisy, its trend is what training does.

    Returns:
        Two panels (loss | dev accuracy) with ``1 + n_langs + n_references`` traces in that
        order (the loss trace is always there, possibly empty), one more after the loss with
        ``smooth``.

    Raises:
        ValueError: on missing columns, non-numeric values, accuracy outside 0..1, or a
            non-finite reference.

    Example:
        >>> h = pd.DataFrame({"step": [1, 2, 3], "loss": [0.9, 0.5, 0.4]})
        >>> a = pd.DataFrame({"step": [0, 3], "lang": ["de", "de"], "accuracy": [0.3, 0.8]})
        >>> len(training_curves(h, a, {"teacher": 0.95}).data)
        3
    """
    _require_columns(history, ["step", "loss"], "history")
    steps = _numeric(history["step"], "step")
    loss = _numeric(history["loss"], "loss", allow_nan=True)
    keep = ~np.isnan(loss)
    all_steps = [steps]

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("training loss", "dev accuracy"), horizontal_spacing=0.1
    )
    fig.add_trace(
        go.Scatter(
            x=steps[keep],
            y=loss[keep],
            mode="lines",
            name="loss",
            line={"color": ANCHOR_COLOR, "width": 1.5},
            opacity=0.35 if smooth > 1 else 1.0,
            hovertemplate="step %{x}<br>loss %{y:.4g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    if smooth > 1:
        kept = loss[keep]
        sums = np.concatenate([[0.0], np.cumsum(kept)])
        idx = np.arange(1, len(kept) + 1)
        start = np.maximum(idx - smooth, 0)
        trend = (sums[idx] - sums[start]) / (idx - start)  # mean of the last `smooth` (or fewer)
        fig.add_trace(
            go.Scatter(
                x=steps[keep],
                y=trend,
                mode="lines",
                name=f"loss, smoothed ({smooth} steps)",
                line={"color": ANCHOR_COLOR, "width": 2.5},
                hovertemplate="step %{x}<br>mean loss %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=1,
        )

    if accuracy is not None:
        _require_columns(accuracy, ["step", "lang", "accuracy"], "accuracy")
        a_steps = _numeric(accuracy["step"], "step")
        a_vals = _numeric(accuracy["accuracy"], "accuracy")
        if ((a_vals < 0) | (a_vals > 1)).any():
            raise ValueError("accuracy values must be in 0..1; divide percentages by 100")
        a_langs = accuracy["lang"].astype(str).to_numpy()
        colors = language_colors(_order(accuracy["lang"]), anchor="mean")
        all_steps.append(a_steps)
        for code in _order(accuracy["lang"]):
            rows = np.flatnonzero(a_langs == code)
            rows = rows[np.argsort(a_steps[rows], kind="stable")]
            fig.add_trace(
                go.Scatter(
                    x=a_steps[rows],
                    y=a_vals[rows],
                    mode="lines+markers",
                    name=code,
                    legendgroup=code,
                    line={"color": colors[code], "width": 3 if code == "mean" else 1.5},
                    marker={"size": 5},
                    hovertemplate=f"{html.escape(code)}<br>step %{{x}}<br>accuracy %{{y:.3f}}"
                    "<extra></extra>",
                ),
                row=1,
                col=2,
            )

    stacked = np.concatenate(all_steps)
    lo, hi = (float(stacked.min()), float(stacked.max())) if stacked.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    dashes = ("dash", "dot", "dashdot", "longdash")
    for k, (label, level) in enumerate((references or {}).items()):
        try:
            value = float(level)
        except (TypeError, ValueError):
            raise ValueError(f"reference {label!r} must be a number, got {level!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"reference {label!r} is not finite ({level!r}); pass a number")
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[value, value],
                mode="lines",
                name=f"{label} ({value:.2f})",
                line={"dash": dashes[k % len(dashes)], "width": 1.5, "color": "#666"},
                hovertemplate=f"{html.escape(str(label))}: {value:.3f}<extra></extra>",
            ),
            row=1,
            col=2,
        )

    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", type="log" if log_loss else "linear", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=2)
    fig.update_layout(title=title, height=420, plot_bgcolor="white", hovermode="closest")
    fig.update_xaxes(showgrid=True, gridcolor="#eee")
    fig.update_yaxes(showgrid=True, gridcolor="#eee")
    return fig


def accuracy_bars(
    df: pd.DataFrame,
    *,
    group: str = "model",
    value: str = "accuracy",
    title: str | None = None,
) -> go.Figure:
    """Per-language grouped bars of retrieval accuracy, one bar group per model or stage.

    Args:
        df: long-form frame, one row per (language, model): columns ``lang``, ``group``
            (default ``model``; pass ``group="stage"`` for a ``stage`` column) and ``value``
            (default ``accuracy``, in 0..1).
        group: the column whose values become the bar series (e.g. "before" / "after").
        value: the column with the accuracy.
        title: figure title.

    Returns:
        One ``go.Bar`` per group value, first appearance order; ``x`` = languages in first
        appearance order (the same for every bar trace), ``y`` = accuracy or None where a
        group has no row for that language.

    Raises:
        ValueError: on missing columns, no rows, duplicate (lang, group) rows or values
            outside 0..1.

    Example:
        >>> df = pd.DataFrame({"lang": ["de", "de"], "model": ["before", "after"],
        ...                    "accuracy": [0.4, 0.9]})
        >>> [t.name for t in accuracy_bars(df).data]
        ['before', 'after']
    """
    _require_columns(df, ["lang", group, value], "df")
    if len(df) == 0:
        raise ValueError("df has no rows; pass one row per (language, model)")
    vals = _numeric(df[value], value)
    if ((vals < 0) | (vals > 1)).any():
        raise ValueError(f"{value!r} values must be in 0..1; divide percentages by 100")
    keys = pd.DataFrame({"lang": df["lang"].astype(str), "group": df[group].astype(str)})
    dup = keys.duplicated()
    if dup.any():
        first = keys[dup].iloc[0]
        raise ValueError(
            f"more than one row for lang {first['lang']!r} and {group} {first['group']!r}; "
            "pass one accuracy per (language, model)"
        )
    langs = _order(df["lang"])
    lookup = {(k.lang, k.group): v for k, v in zip(keys.itertuples(), vals, strict=True)}
    fig = go.Figure()
    for name in _order(df[group]):
        ys = [lookup.get((code, name)) for code in langs]
        fig.add_trace(
            go.Bar(
                x=langs,
                y=ys,
                name=name,
                text=[None if v is None else f"{v:.2f}" for v in ys],
                textposition="outside",
                hovertemplate=f"{html.escape(name)}<br>%{{x}}: %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title=title,
        yaxis={"title": {"text": value}, "range": [0, 1.1]},
        xaxis={"title": {"text": "language"}},
        legend={"title": {"text": group}},
        plot_bgcolor="white",
        height=420,
    )
    fig.update_yaxes(showgrid=True, gridcolor="#eee")
    return fig


# ----------------------------------------------------------------------------- teacher's space

_TS_COLUMNS = ("x", "y", "lang", "model", "sentence", "pair_id", "frame")
_TS_MODELS = ("teacher", "student")
COS_LABEL = "cos(student(x), teacher(en))"
RETRIEVAL_LABEL = "retrieval into the teacher's space"


def _teacher_space_data(df: object) -> dict:
    """Validated arrays of a :func:`viz.project.teacher_space_frames` frame, plus shared ranges."""
    _require_columns(df, _TS_COLUMNS, "df")
    if len(df) == 0:
        raise ValueError("df has no rows; build it with viz.project.teacher_space_frames")
    model = df["model"].astype(str).to_numpy()
    unknown = sorted(set(model) - set(_TS_MODELS))
    if unknown:
        raise ValueError(
            f"column 'model' must be 'teacher' (English anchors) or 'student' (translations), "
            f"got {unknown}; build df with viz.project.teacher_space_frames"
        )
    x = _numeric(df["x"], "x")
    y = _numeric(df["y"], "y")
    has_distance = "distance" in df.columns
    distance = _numeric(df["distance"], "distance", allow_nan=True) if has_distance else None
    frame = df["frame"].astype(str).to_numpy()
    student = model == "student"
    if not student.any():
        raise ValueError("df has no 'student' rows; pass the student's translations too")
    langs = _order(df["lang"][student])
    pad = []
    for v in (x, y):  # one range over ALL frames: every frame, static or animated, compares
        lo, hi = float(v.min()), float(v.max())
        margin = 0.06 * (hi - lo) if hi > lo else 1.0
        pad.append([lo - margin, hi + margin])
    return {
        "x": x.astype(np.float32),  # display precision: keeps a figure with frames small
        "y": y.astype(np.float32),
        "lang": df["lang"].astype(str).to_numpy(),
        "model": model,
        "sentence": df["sentence"].astype(str).to_numpy(),
        "pair": df["pair_id"].to_numpy(),
        "frame": frame,
        "distance": None if distance is None else distance.astype(np.float32),
        "frames": _order(df["frame"]),
        "langs": langs,
        "colors": language_colors(["en", *langs], anchor="en"),
        "x_range": pad[0],
        "y_range": pad[1],
    }


def _teacher_space_traces(data: dict, label: str, *, full: bool = True) -> list[go.Scatter]:
    """The ``1 + 2 * n_langs`` traces of one frame; ``full=False``: only what moves."""
    in_frame = data["frame"] == label
    x, y, pair, lang = data["x"], data["y"], data["pair"], data["lang"]
    anchor_rows = np.flatnonzero(in_frame & (data["model"] == "teacher"))
    anchor_of: dict[object, int] = {}
    for i in anchor_rows:
        anchor_of.setdefault(_plain(pair[i]), int(i))
    moved = {"x": x[anchor_rows], "y": y[anchor_rows]}
    anchors = go.Scatter(**moved)
    if full:
        anchors = go.Scatter(
            **moved,
            mode="markers",
            name="teacher(en)",
            legendgroup="__teacher__",
            marker={
                "color": ANCHOR_COLOR,
                "size": 13,
                "symbol": "diamond",
                "line": {"color": "white", "width": 1},
            },
            text=np.asarray([_hover_text(s) for s in data["sentence"][anchor_rows]], dtype=object),
            customdata=pair[anchor_rows],
            hovertemplate="%{text}<br><i>teacher(en)</i> \u00b7 <i>pair</i> %{customdata}"
            "<extra></extra>",
        )
    en = {p: data["sentence"][i] for p, i in anchor_of.items()}
    lines: list[go.Scatter] = []
    markers: list[go.Scatter] = []
    students = in_frame & (data["model"] == "student")
    for code in data["langs"]:
        rows = np.flatnonzero(students & (lang == code))
        src = np.asarray([i for i in rows if _plain(pair[i]) in anchor_of], dtype=np.int64)
        dst = np.asarray([anchor_of[_plain(pair[i])] for i in src], dtype=np.int64)
        gap = np.full(len(src), np.nan, dtype=np.float32)
        # Segments [translation, anchor, NaN] flattened: the NaN breaks the line between pairs.
        seg_x = np.column_stack([x[src], x[dst], gap]).ravel()
        seg_y = np.column_stack([y[src], y[dst], gap]).ravel()
        if full:
            lines.append(
                go.Scatter(
                    x=seg_x,
                    y=seg_y,
                    mode="lines",
                    name=f"{code} \u2192 teacher(en)",
                    legendgroup=code,
                    showlegend=False,
                    line={"color": data["colors"][code], "width": 1},
                    opacity=0.45,
                    hoverinfo="skip",
                )
            )
        else:
            lines.append(go.Scatter(x=seg_x, y=seg_y))
        moved = {"x": x[rows], "y": y[rows]}
        if data["distance"] is not None:
            moved["customdata"] = data["distance"][rows]
        if not full:
            markers.append(go.Scatter(**moved))
            continue
        text = [
            _hover_text(data["sentence"][i])
            + (
                f"<br><i>teacher(en):</i> {_hover_text(en[_plain(pair[i])])}"
                if _plain(pair[i]) in en
                else ""
            )
            for i in rows
        ]
        gap_text = (
            " \u00b7 1 \u2212 cos to teacher(en) %{customdata:.3f}"
            if data["distance"] is not None
            else ""
        )
        markers.append(
            go.Scatter(
                **moved,
                mode="markers",
                name=f"student({code})",
                legendgroup=code,
                marker={"color": data["colors"][code], "size": 7, "opacity": 0.85},
                text=np.asarray(text, dtype=object),
                hovertemplate=f"%{{text}}<br><i>student</i> \u00b7 <i>lang</i> "
                f"{html.escape(code)}{gap_text}<extra></extra>",
            )
        )
    return [anchors, *lines, *markers]


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def _caption(
    caption_numbers: Mapping[str, Mapping[str, float]] | None, upto: str | None = None
) -> str | None:
    """'cos(...) a → b · retrieval ... c → d' from the first (baseline) entry to the entry
    ``upto`` (default: the last), with the pool retrieval ranks among where it is known."""
    if caption_numbers is None:
        return None
    if not isinstance(caption_numbers, Mapping) or not caption_numbers:
        raise ValueError(
            "caption_numbers must be a non-empty mapping label -> teacher_space_numbers(...) "
            "dict, baseline first, e.g. {'untrained': {...}, 'distilled': {...}}"
        )
    checked: list[tuple[str, float, float, object]] = []
    for label, numbers in caption_numbers.items():
        if not isinstance(numbers, Mapping) or not {"mean_cos", "retrieval"} <= set(numbers):
            raise ValueError(
                f"caption_numbers[{str(label)!r}] needs 'mean_cos' and 'retrieval' (the dict "
                "viz.metrics.teacher_space_numbers returns)"
            )
        values = []
        for key in ("mean_cos", "retrieval"):
            try:
                value = float(numbers[key])
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                raise ValueError(
                    f"caption_numbers[{str(label)!r}][{key!r}] must be a finite number, got "
                    f"{numbers[key]!r}"
                )
            values.append(value)
        checked.append((html.escape(str(label)), values[0], values[1], numbers.get("n")))
    first = checked[0]
    last = checked[list(caption_numbers).index(upto)] if upto in caption_numbers else checked[-1]
    pool = caption_numbers[next(iter(caption_numbers))].get("pool")
    retrieval = RETRIEVAL_LABEL + (f" among {pool} English sentences" if pool else "")
    if len(checked) == 1 or last is first:
        text = f"{COS_LABEL} {_fmt(first[1])} \u00b7 {retrieval} {_fmt(first[2])}"
        stages = first[0]
    else:
        text = (
            f"{COS_LABEL} {_fmt(first[1])} \u2192 {_fmt(last[1])} \u00b7 "
            f"{retrieval} {_fmt(first[2])} \u2192 {_fmt(last[2])}"
        )
        stages = f"{first[0]} \u2192 {last[0]}"
    ns = [c[3] for c in (first, last)]
    if all(isinstance(v, (int, np.integer)) for v in ns):
        what = " translations"
        stages += (
            f", n = {ns[0]}{what}" if ns[0] == ns[-1] else f", n = {ns[0]} \u2192 {ns[-1]}{what}"
        )
    return f"{text} ({stages})"


def _teacher_space_layout(
    fig: go.Figure, data: dict, *, title: str | None, caption: str | None, height: int
) -> None:
    fig.update_xaxes(range=data["x_range"], showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(range=data["y_range"], showticklabels=False, showgrid=False, zeroline=False)
    top = 30 + (35 if title else 0) + (30 if caption else 0)
    if caption:
        fig.add_annotation(
            name="caption",
            text=caption,
            xref="paper",
            yref="paper",
            x=0.0,
            xanchor="left",
            y=1.0,
            yanchor="bottom",
            yshift=8,
            showarrow=False,
            align="left",
            font={"size": 13, "color": "#333"},
        )
    fig.update_layout(
        title=title,
        height=height,
        plot_bgcolor="white",
        legend={"itemsizing": "constant"},
        margin={"l": 20, "r": 20, "t": top, "b": 20},
        hoverlabel={"align": "left"},
        hovermode="closest",
    )


def teacher_space(
    df: pd.DataFrame,
    frame: str | None = None,
    *,
    title: str | None = None,
    caption_numbers: Mapping[str, Mapping[str, float]] | None = None,
    height: int = 560,
) -> go.Figure:
    """The method in one panel: each translation, embedded by the student, against its anchor.

    The teacher's English sentences are large dark diamonds; the student's translations are
    dots coloured by language, each joined by a thin line to the diamond of its English
    sentence. Distillation succeeds when the lines shrink to nothing: student(x) lands where
    the teacher put en. Axis ranges cover every frame of ``df``, so two figures of one frame
    each ("untrained", "distilled") share axes and compare.

    Args:
        df: long-form frame from :func:`viz.project.teacher_space_frames`: columns ``x, y,
            lang, model, sentence, pair_id, frame`` and optionally ``distance`` (shown on
            hover); ``model`` is ``"teacher"`` (anchors) or ``"student"``.
        frame: the frame label to draw; default: the last one.
        title: figure title.
        caption_numbers: label -> :func:`viz.metrics.teacher_space_numbers` dict, baseline
            first, e.g. ``{"untrained": {...}, "distilled": {...}}``; printed above the plot
            as "cos(student(x), teacher(en)) 0.02 → 0.71 · retrieval into the teacher's
            space 0.00 → 0.86 (untrained → distilled, n = 200)" (first → last entry).
        height: figure height in pixels.

    Returns:
        A figure with ``1 + 2 * n_langs`` traces (student languages in first appearance order
        over the whole ``df``): ``data[0]`` the anchors, then one line trace per language, then
        one marker trace per language named ``student(<lang>)`` (``customdata`` =
        ``distance`` when ``df`` has it; ``text`` = the sentence and its English anchor). The
        caption, if any, is the layout annotation named ``"caption"``.

    Raises:
        ValueError: on missing columns, no rows, no student rows, a ``model`` other than
            teacher/student, non-finite coordinates, an unknown ``frame`` or malformed
            ``caption_numbers``.

    Example:
        >>> df = pd.DataFrame({"x": [0.0, 1.0, 0.0, 0.1], "y": [0.0, 1.0, 0.0, 0.1],
        ...                    "lang": ["en", "de"] * 2, "model": ["teacher", "student"] * 2,
        ...                    "sentence": ["Hi", "Hallo"] * 2, "pair_id": [0, 0, 0, 0],
        ...                    "frame": ["untrained"] * 2 + ["distilled"] * 2})
        >>> fig = teacher_space(df, caption_numbers={"untrained": {"mean_cos": 0.02,
        ...     "retrieval": 0.0}, "distilled": {"mean_cos": 0.71, "retrieval": 0.86}})
        >>> len(fig.data), list(fig.layout.xaxis.range) == list(teacher_space(df, "untrained")
        ...     .layout.xaxis.range)
        (3, True)
    """
    data = _teacher_space_data(df)
    if frame is None:
        frame = data["frames"][-1]
    elif str(frame) not in data["frames"]:
        raise ValueError(f"frame {frame!r} is not in df; its frames are {data['frames']}")
    fig = go.Figure(_teacher_space_traces(data, str(frame)))
    _teacher_space_layout(fig, data, title=title, caption=_caption(caption_numbers), height=height)
    return fig


def teacher_space_animation(
    df: pd.DataFrame,
    *,
    title: str | None = None,
    height: int = 620,
    caption_numbers: Mapping[str, Mapping[str, float]] | None = None,
    frame_ms: int = 800,
    frames: bool = True,
) -> go.Figure:
    """:func:`teacher_space` as a plotly animation: anchors fixed, the student's points move.

    ``frames=False`` is for hosts that drop a figure's frames (gradio's ``gr.Plot`` renders
    with ``Plotly.react(div, data, layout)``, so ``animate`` finds nothing): no ``go.Frame``s
    and no play button; each slider step carries its frame's ``x``, ``y`` and ``customdata``
    and applies them with ``restyle``, which works with data and layout alone.

    One ``go.Frame`` per ``frame`` label of ``df``, in order (e.g. untrained, step 0, step 120,
    ..., distilled), a step slider labelled with the frame labels and play/pause buttons. The
    axes are fixed over all frames. The figure starts on the first frame.

    Args:
        df: as :func:`teacher_space`.
        title: figure title.
        height: figure height in pixels.
        caption_numbers: as :func:`teacher_space` (baseline → result, the same in every frame).
        frame_ms: milliseconds per frame when playing.

    Returns:
        A figure whose ``data`` is the first frame's traces (the layout of
        :func:`teacher_space`), ``frames`` one per label (name = label), each with the same
        ``1 + 2 * n_langs`` traces in the same order, carrying only what moves (``x, y`` and
        the students' ``customdata``), coordinates as float32; ``layout.sliders[0].steps``
        labelled with the frame labels, ``layout.updatemenus[0]`` the play and pause buttons.

    Raises:
        ValueError: as :func:`teacher_space`, or on ``frame_ms`` < 1.

    Example:
        >>> df = pd.DataFrame({"x": [0.0, 1.0, 0.0, 0.1], "y": [0.0, 1.0, 0.0, 0.1],
        ...                    "lang": ["en", "de"] * 2, "model": ["teacher", "student"] * 2,
        ...                    "sentence": ["Hi", "Hallo"] * 2, "pair_id": [0, 0, 0, 0],
        ...                    "frame": ["untrained"] * 2 + ["distilled"] * 2})
        >>> fig = teacher_space_animation(df)
        >>> [f.name for f in fig.frames], [s.label for s in fig.layout.sliders[0].steps]
        (['untrained', 'distilled'], ['untrained', 'distilled'])
    """
    if not isinstance(frame_ms, (int, np.integer)) or frame_ms < 1:
        raise ValueError(f"frame_ms must be an integer >= 1, got {frame_ms!r}")
    data = _teacher_space_data(df)
    labels = data["frames"]
    if not frames:
        return _teacher_space_slider(data, labels, title, height, caption_numbers)
    fig = go.Figure(
        data=_teacher_space_traces(data, labels[0]),
        frames=[
            go.Frame(name=label, data=_teacher_space_traces(data, label, full=False))
            for label in labels
        ],
    )
    _teacher_space_layout(fig, data, title=title, caption=_caption(caption_numbers), height=height)
    move = {"duration": int(frame_ms) * 5 // 8, "easing": "cubic-in-out"}
    fig.update_layout(
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": "frame: ", "font": {"size": 13}},
                "pad": {"t": 10, "b": 10},
                "x": 0.12,
                "len": 0.88,
                "steps": [
                    {
                        "label": label,
                        "method": "animate",
                        "args": [
                            [label],
                            {
                                "mode": "immediate",
                                "frame": {"duration": 0, "redraw": False},
                                "transition": move,
                            },
                        ],
                    }
                    for label in labels
                ],
            }
        ],
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "showactive": False,
                "x": 0.12,
                "xanchor": "right",
                "y": 0,
                "yanchor": "top",
                "pad": {"t": 22, "r": 10},
                "buttons": [
                    {
                        "label": "\u25b6 play",
                        "method": "animate",
                        "args": [
                            None,
                            {
                                "frame": {"duration": int(frame_ms), "redraw": False},
                                "fromcurrent": True,
                                "transition": move,
                            },
                        ],
                    },
                    {
                        "label": "\u275a\u275a pause",
                        "method": "animate",
                        "args": [
                            [None],
                            {
                                "mode": "immediate",
                                "frame": {"duration": 0, "redraw": False},
                                "transition": {"duration": 0},
                            },
                        ],
                    },
                ],
            }
        ],
    )
    fig.update_layout(margin={"b": 100})
    return fig


def _plain_list(values) -> list | None:
    """A JSON-plain list (NaN -> None, numpy scalars -> Python) of a trace's array."""
    if values is None:
        return None
    out = []
    for v in np.asarray(values).tolist():
        out.append(None if isinstance(v, float) and math.isnan(v) else v)
    return out


def _teacher_space_slider(data, labels, title, height, caption_numbers) -> go.Figure:
    """The animation as a slider of ``restyle`` steps (no frames): see
    :func:`teacher_space_animation`'s ``frames=False``."""
    per_frame = {label: _teacher_space_traces(data, label) for label in labels}
    fig = go.Figure(data=per_frame[labels[0]])
    _teacher_space_layout(
        fig, data, title=title, caption=_caption(caption_numbers, labels[0]), height=height
    )
    names = [a.name for a in fig.layout.annotations]
    at = names.index("caption") if "caption" in names else None
    steps = []
    for label in labels:
        traces = per_frame[label]
        # Plain lists: plotly.js decodes typed arrays ({dtype, bdata}) in traces, not in the
        # arguments of a slider's restyle.
        update = {
            "x": [_plain_list(t.x) for t in traces],
            "y": [_plain_list(t.y) for t in traces],
            "customdata": [_plain_list(t.customdata) for t in traces],
        }
        # The caption follows the slider: baseline -> this frame's numbers.
        relayout = (
            {} if at is None else {f"annotations[{at}].text": _caption(caption_numbers, label)}
        )
        steps.append(
            {
                "label": label,
                "method": "update",
                "args": [update, relayout, list(range(len(traces)))],
            }
        )
    fig.update_layout(
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": "frame: ", "font": {"size": 13}},
                "pad": {"t": 10, "b": 10},
                "steps": steps,
            }
        ],
        margin={"b": 100},
    )
    return fig


def empty_figure(message: str, *, height: int = 360) -> go.Figure:
    """A figure with no data and ``message`` written in its middle (for bad input or no data).

    Example:
        >>> empty_figure("pick at least two sentences").layout.annotations[0].text
        'pick at least two sentences'
    """
    fig = go.Figure()
    fig.add_annotation(
        text=html.escape(str(message)),
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"size": 15, "color": "#555"},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(
        height=height, plot_bgcolor="white", margin={"l": 20, "r": 20, "t": 20, "b": 20}
    )
    return fig


# ----------------------------------------------------------------------------- language bias

BIAS_PARTS = {
    "translation": ("its translation", "#2a9d8f"),
    "own_language": ("a sentence in its own language", "#e76f51"),
    "other": ("other", "#b0b0b0"),
}


def language_bias_bars(df: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """What each query's nearest neighbour is in one pool mixing every language, as stacked
    bars per (model, language), with the per-language pool's accuracy beside it as a marker.

    The marker is the baseline the bar must be read against: a green segment as high as the
    marker means no language bias; the gap between them is the accuracy lost to mixing.

    Args:
        df: long-form frame, one row per (model, language): ``model``, ``lang``, the shares
            ``translation``, ``own_language``, ``other`` (each 0..1, summing to 1) and
            ``per_language_accuracy`` (0..1).
        title: figure title.

    Returns:
        Three stacked ``go.Bar`` traces (translation, own language, other), then one marker
        trace for the per-language accuracy; ``x`` is a two-level axis (model, language).

    Raises:
        ValueError: missing columns, no rows, shares outside 0..1 or not summing to 1.

    Example:
        >>> df = pd.DataFrame({"model": ["m"], "lang": ["de"], "translation": [0.5],
        ...                    "own_language": [0.5], "other": [0.0],
        ...                    "per_language_accuracy": [0.9]})
        >>> [t.name for t in language_bias_bars(df).data][-1]
        'accuracy in its own language pool'
    """
    cols = [*BIAS_PARTS, "per_language_accuracy"]
    _require_columns(df, ["model", "lang", *cols], "df")
    if len(df) == 0:
        raise ValueError("df has no rows; pass one row per (model, language)")
    values = {c: _numeric(df[c], c) for c in cols}
    for c, v in values.items():
        if ((v < 0) | (v > 1)).any():
            raise ValueError(f"{c!r} values must be in 0..1; divide percentages by 100")
    total = sum(values[c] for c in BIAS_PARTS)
    if not np.allclose(total, 1.0, atol=1e-6):
        raise ValueError("translation + own_language + other must be 1 on every row (shares)")
    x = [df["model"].astype(str).tolist(), df["lang"].astype(str).tolist()]
    fig = go.Figure()
    for key, (label, color) in BIAS_PARTS.items():
        fig.add_trace(
            go.Bar(
                x=x,
                y=values[key],
                name=f"nearest is {label}",
                marker_color=color,
                hovertemplate=f"{html.escape(label)}: %{{y:.1%}}<extra>%{{x}}</extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=values["per_language_accuracy"],
            mode="markers",
            name="accuracy in its own language pool",
            marker={"symbol": "diamond", "size": 10, "color": ANCHOR_COLOR},
            hovertemplate="per-language pool: %{y:.1%}<extra>%{x}</extra>",
        )
    )
    fig.update_layout(
        barmode="stack",
        title=title,
        yaxis={"title": {"text": "share of queries"}, "range": [0, 1.05], "tickformat": ".0%"},
        legend={"orientation": "h", "y": -0.25},
        plot_bgcolor="white",
        height=460,
    )
    fig.update_yaxes(showgrid=True, gridcolor="#eee")
    return fig
