"""The report's charts, as plain plotly figure specs (dicts), computed from the analysis tables.

Each function returns ``{"id": ..., "figure": {"data": [...], "layout": {...}}}``: JSON data the
report stores and renders. Colours are fixed per model so every chart and table agrees.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from asyncbench.judging import analyze
from servers import MODELS

OTHER_COLORS = ("#e7298a", "#66a61e", "#e6ab02", "#a6761d")
EXCLUDED_COLOR = "#9a9a9a"
HEIGHT = 320
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"


def colors(models: list[str]) -> dict[str, str]:
    spare = iter(OTHER_COLORS * (len(models) // len(OTHER_COLORS) + 1))
    return {m: MODELS[m].color if m in MODELS else next(spare) for m in models}


def throughput(fig_id: str, agg, cells, models, palette, load_title: str) -> dict:
    """Median rps per load, one line per model with min–max bars, the prediction dashed beside
    it, and excluded cells as grey crosses."""
    traces = []
    for model in models:
        rows = agg[(agg["server"] == model) & agg["rps_median"].notna()].sort_values("load")
        if rows.empty:
            continue
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": model,
            "x": _floats(rows["load"]), "y": _floats(rows["rps_median"]),
            "line": {"color": palette[model], "width": 2.5}, "marker": {"size": 7},
            "error_y": _bars(rows, "rps", 1.2),
            "hovertemplate": "%{y:.1f} req/s at %{x}<extra>" + model + "</extra>",
        })  # fmt: skip
        predicted = rows[rows["predicted_rps"].notna()]
        if len(predicted):
            traces.append({
                "type": "scatter", "mode": "lines", "name": f"{model} predicted",
                "x": _floats(predicted["load"]), "y": _floats(predicted["predicted_rps"]),
                "line": {"color": palette[model], "width": 1.5, "dash": "dash"}, "opacity": 0.7,
                "hovertemplate": "predicted %{y:.1f} req/s<extra>" + model + "</extra>",
            })  # fmt: skip
    excluded = cells[~cells["included"] & cells["rps"].notna()]
    if len(excluded):
        traces.append({
            "type": "scatter", "mode": "markers", "name": "excluded cells",
            "x": _floats(excluded["load"]), "y": _floats(excluded["rps"]),
            "text": [f"{r.server} r{r.repeat}: {r.reason}" for r in excluded.itertuples()],
            "marker": {"symbol": "x-thin-open", "size": 10, "color": EXCLUDED_COLOR,
                       "line": {"width": 2, "color": EXCLUDED_COLOR}},
            "hovertemplate": "%{text}<extra>excluded</extra>",
        })  # fmt: skip
    shown = [v for t in traces for v in t["y"] if v and v > 0]
    log_y = bool(shown) and max(shown) / min(shown) > 30
    layout = _layout(
        "Throughput (bars: min–max; dashed: predicted)", load_title,
        "requests / s" + (" (log scale)" if log_y else ""), xaxis=_load_axis(cells["load"]),
        yaxis=_log_axis(shown) if log_y else {"rangemode": "tozero"},
    )  # fmt: skip
    caption = (
        "Predicted (queueing theory): min(load, slots) / delay, slots from each model's "
        "capacity law (workers for a blocking model)."
        if agg["predicted_rps"].notna().any()
        else "No prediction: no delay to model."
    )
    return {"id": fig_id, "figure": {"data": traces, "layout": layout}, "caption": caption}


def latency(fig_id: str, agg, models, palette, load_title: str) -> dict:
    """p50 (solid) and p99 (dotted) per load, one colour per model; log y when the range is wide."""
    traces, values = [], []
    for model in models:
        rows = agg[(agg["server"] == model) & agg["p50_ms_median"].notna()].sort_values("load")
        if rows.empty:
            continue
        for metric, dash, symbol in (("p50", "solid", "circle"), ("p99", "dot", "diamond")):
            col = f"{metric}_ms"
            values += _floats(rows[f"{col}_min"]) + _floats(rows[f"{col}_max"])
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": f"{model} {metric}",
                "x": _floats(rows["load"]), "y": _floats(rows[f"{col}_median"]),
                "line": {"color": palette[model], "width": 2.2, "dash": dash},
                "marker": {"size": 6, "symbol": symbol}, "error_y": _bars(rows, col, 1),
                "hovertemplate": f"{metric} " + "%{y:.1f} ms at %{x}<extra>" + model + "</extra>",
            })  # fmt: skip
    positive = [v for v in values if v and v > 0]
    log_y = bool(positive) and max(positive) / min(positive) > 20
    layout = _layout(
        "Latency: p50 solid, p99 dotted (bars: min–max)", load_title,
        "milliseconds" + (" (log scale)" if log_y else ""), xaxis=_load_axis(agg["load"]),
        yaxis=_log_axis(positive) if log_y else {"rangemode": "tozero"},
    )  # fmt: skip
    caption = "Each cell's percentiles come from its raw in-window samples; the line is the median."
    return {"id": fig_id, "figure": {"data": traces, "layout": layout}, "caption": caption}


def cdf(fig_id: str, title: str, latencies: dict[str, np.ndarray], palette) -> dict:
    """Empirical latency distribution per model, from raw samples (reduced to ~200 quantiles)."""
    traces, ends = [], []
    for model, values in latencies.items():
        if not len(values):
            continue
        x, y = analyze.cdf_points(values)
        ends += [x[0], x[-1]]
        traces.append({
            "type": "scatter", "mode": "lines", "name": model,
            "x": [round(v, 3) for v in x], "y": [round(v, 4) for v in y],
            "line": {"color": palette[model], "width": 2.5, "shape": "hv"},
            "hovertemplate": "%{y:.1%} of requests ≤ %{x:.1f} ms<extra>" + model + "</extra>",
        })  # fmt: skip
    log_x = bool(ends) and min(ends) > 0 and max(ends) / min(ends) > 20
    layout = _layout(
        title, "latency, ms" + (" (log scale)" if log_x else ""), "requests ≤ x",
        xaxis=_log_axis(ends) if log_x else {},
        yaxis={"range": [0, 1.02], "tickformat": ".0%"},
    )  # fmt: skip
    counts = " · ".join(f"{m} {len(v):,}" for m, v in latencies.items() if len(v))
    caption = f"Requests in the measured windows: {counts}." if counts else ""
    return {"id": fig_id, "figure": {"data": traces, "layout": layout}, "caption": caption}


def _layout(title: str, x_title: str, y_title: str, **extra) -> dict:
    axis = {"gridcolor": "#e6e6e6", "linecolor": "#999", "zeroline": False, "ticks": "outside"}
    layout = {
        "title": {"text": title, "font": {"size": 13}, "x": 0, "xanchor": "left"},
        "height": HEIGHT,
        "margin": {"l": 60, "r": 16, "t": 36, "b": 48},
        "font": {"family": FONT, "size": 12},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "hovermode": "closest",
        "showlegend": False,  # colours are the page's model legend; line styles are in the title
        "legend": {"x": 0.01, "y": 0.99, "xanchor": "left", "yanchor": "top",
                   "bgcolor": "rgba(255,255,255,0.85)", "font": {"size": 11}},
        "xaxis": {**axis, "title": {"text": x_title}},
        "yaxis": {**axis, "title": {"text": y_title}},
    }  # fmt: skip
    for key, value in extra.items():
        layout[key] = {**layout.get(key, {}), **value} if isinstance(value, dict) else value
    return layout


def _load_axis(loads: pd.Series) -> dict:
    """Users (or offered rates) as ticks at the measured levels, log-spaced when they span 8×."""
    levels = sorted({float(v) for v in loads.dropna()})
    text = [f"{v:g}" for v in levels]
    if len(levels) > 1 and levels[0] > 0 and levels[-1] / levels[0] >= 8:
        return {"type": "log", "tickvals": levels, "ticktext": text}
    return {"tickvals": levels, "ticktext": text}


def _log_axis(values: list[float]) -> dict:
    """A log axis labelled 1-2-5 (1, 2, 5, 10, 20, …) instead of plotly's crowded minor digits."""
    low, high = min(values), max(values)
    ticks = [
        m * 10**e
        for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for m in (1, 2, 5)
    ]
    ticks = [t for t in ticks if low / 2 <= t <= high * 2]
    return {"type": "log", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def _bars(rows: pd.DataFrame, metric: str, thickness: float) -> dict:
    return {
        "type": "data", "symmetric": False, "thickness": thickness, "width": 4,
        "array": _floats(rows[f"{metric}_max"] - rows[f"{metric}_median"]),
        "arrayminus": _floats(rows[f"{metric}_median"] - rows[f"{metric}_min"]),
    }  # fmt: skip


def _floats(series: pd.Series) -> list[float | None]:
    return [None if pd.isna(v) else round(float(v), 3) for v in series]


def per_level(fig_id: str, title: str, y_title: str, agg, models, palette, column: str,
              load_title: str, predicted: str | None = None, caption: str = "") -> dict:
    """One metric's level medians against the load, a line per model (and its prediction
    dashed beside it); log y when the values span a wide range."""
    traces, shown = [], []
    for model in models:
        rows = agg[(agg["server"] == model) & agg[column].notna()].sort_values("load")
        if rows.empty:
            continue
        shown += [v for v in _floats(rows[column]) if v]
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": model,
            "x": _floats(rows["load"]), "y": _floats(rows[column]),
            "line": {"color": palette[model], "width": 2.5}, "marker": {"size": 7},
            "hovertemplate": "%{y:.1f} at %{x}<extra>" + model + "</extra>",
        })  # fmt: skip
        if predicted and rows[predicted].notna().any():
            traces.append({
                "type": "scatter", "mode": "lines", "name": f"{model} predicted",
                "x": _floats(rows["load"]), "y": _floats(rows[predicted]),
                "line": {"color": palette[model], "width": 1.5, "dash": "dash"}, "opacity": 0.7,
            })  # fmt: skip
    positive = [v for v in shown if v > 0]
    log_y = bool(positive) and max(positive) / min(positive) > 30
    layout = _layout(title, load_title, y_title + (" (log scale)" if log_y else ""),
                     xaxis=_load_axis(agg["load"]),
                     yaxis=_log_axis(positive) if log_y else {"rangemode": "tozero"})  # fmt: skip
    return {"id": fig_id, "figure": {"data": traces, "layout": layout}, "caption": caption}
