"""Pictures people look at rather than read: sample grids with error and uncertainty heat maps, loss curves.

Pure numpy, OpenCV and matplotlib (Agg, without pyplot's global state); nothing here knows about MLflow.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from julnet import storage
from julnet.losses.uncertainty import error_map

MIN_TILE_WIDTH = 160
"""Tiles narrower than this are enlarged by an integer factor (nearest neighbour) so titles and pixels read."""

COLUMNS = ("masked source", "generated", "ground truth", "error |gen - gt|", "predicted error", "uncertainty sigma")
HEADER_HEIGHT = 34
_FONT, _FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


def sample_grid(
    source: Tensor, generated: Tensor, target: Tensor, log_sigma: Tensor, error_pred: Tensor, max_rows: int = 4
) -> np.ndarray:
    """An (H, W, 3) uint8 RGB grid, one example per row, one `COLUMNS` entry per column, under a titled header.

    Images are (B, 3, H, W) in [0, 1]; maps are (B, 1, H, W). The true error |Î − I| and the predicted error ε̂
    share one colour scale from 0 to their joint maximum; σ = exp(log_sigma) has its own, from its min to max.
    """
    rows = slice(0, max_rows)
    with torch.no_grad():
        images = [_to_uint8(x[rows]) for x in (source, generated, target)]
        error, predicted = error_map(generated[rows].float(), target[rows].float()), error_pred[rows].float()
        sigma = log_sigma[rows].float().exp()
        error_top = max(float(error.max()), float(predicted.max()))
        sigma_low, sigma_high = float(sigma.min()), float(sigma.max())
        heat = [_heat(error, 0.0, error_top), _heat(predicted, 0.0, error_top), _heat(sigma, sigma_low, sigma_high)]
    scales = ["", "", "", *[f"0 .. {error_top:.3g}"] * 2, f"{sigma_low:.3g} .. {sigma_high:.3g}"]
    columns = [*images, *heat]  # each (b, h, w, 3) uint8
    factor = math.ceil(MIN_TILE_WIDTH / columns[0].shape[2])
    body = np.concatenate([np.concatenate(list(column), axis=0) for column in columns], axis=1)
    body = body.repeat(factor, axis=0).repeat(factor, axis=1)
    tile_width = body.shape[1] // len(columns)
    return np.concatenate([_header(tile_width, scales), body], axis=0)


def _to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _heat(maps: Tensor, low: float, high: float) -> np.ndarray:
    """(B, 1, H, W) values -> (B, H, W, 3) RGB inferno colours, `low` black and `high` bright yellow."""
    span = high - low if high > low else 1.0
    scaled = ((maps.detach().float()[:, 0] - low) / span).clamp(0, 1) * 255
    gray = scaled.round().byte().cpu().numpy()
    return np.stack([cv2.cvtColor(cv2.applyColorMap(g, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB) for g in gray])


def _header(tile_width: int, scales: list[str]) -> np.ndarray:
    """A dark band with each column's title and, for heat maps, its colour scale."""
    header = np.full((HEADER_HEIGHT, tile_width * len(COLUMNS), 3), 32, np.uint8)
    for i, (title, scale) in enumerate(zip(COLUMNS, scales, strict=True)):
        for line, y in ((title, 14), (scale, 29)):
            cv2.putText(header, line, (i * tile_width + 4, y), _FONT, _FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return header


def loss_curves(history: list[dict[str, float]], keys: list[str], step_key: str = "step") -> np.ndarray:
    """An RGB uint8 plot with one panel per key: value against step, on a log scale when positive over a decade."""
    figure = Figure(figsize=(6, 2.2 * len(keys)), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    for i, key in enumerate(keys):
        axes = figure.add_subplot(len(keys), 1, i + 1)
        points = [(row[step_key], row[key]) for row in history if key in row and math.isfinite(row[key])]
        if points:
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, linewidth=1.2)
            if min(values) > 0 and max(values) > 10 * min(values):
                axes.set_yscale("log")
        axes.set_title(key)
        axes.set_xlabel(step_key)
        axes.set_ylabel("value")
        axes.grid(True, alpha=0.3)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _axes(size: tuple[float, float]) -> tuple[FigureCanvasAgg, Any]:
    """A one-plot figure of `size` inches at 100 dpi, drawn off-screen (Agg)."""
    figure = Figure(figsize=size, dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    return canvas, figure.add_subplot(1, 1, 1)


def _finished(canvas: FigureCanvasAgg, axes: Any, title: str, xlabel: str, ylabel: str) -> np.ndarray:
    """Title, axis labels, grid and legend; the drawn figure as RGB uint8."""
    axes.set_title(title, fontsize=9)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def sparsification_plot(curves: dict[str, list[float]], ause: dict[str, float], title: str) -> np.ndarray:
    """An RGB uint8 plot of sparsification curves: mean remaining error against the fraction of pixels removed,
    most uncertain first for each predictor, largest error first for the oracle (dashed); AUSE in the legend."""
    canvas, axes = _axes((6, 4))
    fractions = curves["fractions"]
    for key, values in curves.items():
        if key in ("fractions", "oracle"):
            continue
        label = f"{key} (AUSE {ause[key]:.4g})" if key in ause else key
        axes.plot(fractions, values, linewidth=1.5, label=label)
    axes.plot(fractions, curves["oracle"], "k--", linewidth=1.2, label="oracle (true error)")
    return _finished(canvas, axes, title, "fraction of pixels removed", "mean |error| of the rest")


def reliability_plot(points: dict[str, list[float]], uce: float, title: str) -> np.ndarray:
    """An RGB uint8 reliability diagram: mean observed |error| against mean predicted (σ) per bin, with the diagonal
    a calibrated σ lies on (dashed); `points` holds "predicted", "observed" and "counts" lists, UCE in the legend."""
    canvas, axes = _axes((5, 4.5))
    predicted, observed = points["predicted"], points["observed"]
    top = max(max(predicted), max(observed)) * 1.05 or 1.0
    axes.plot([0, top], [0, top], "k--", linewidth=1.2, label="calibrated (observed = predicted)")
    axes.plot(predicted, observed, "o-", linewidth=1.5, label=f"sigma (UCE {uce:.4g}, {len(predicted)} bins)")
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    return _finished(canvas, axes, title, "mean predicted |error| (sigma) in the bin", "mean true |error| in the bin")


def risk_coverage_plot(coverage: list[float], risk: list[float], oracle: list[float], aurc: float, title: str) -> np.ndarray:
    """An RGB uint8 risk-coverage plot: mean error of the kept frames against the fraction kept, most confident first,
    with the oracle order (smallest error first, dashed); AURC in the legend."""
    canvas, axes = _axes((6, 4))
    axes.plot(coverage, risk, linewidth=1.5, label=f"confidence (AURC {aurc:.4g})")
    axes.plot(coverage, oracle, "k--", linewidth=1.2, label="oracle (true error)")
    return _finished(canvas, axes, title, "fraction of frames kept (coverage)", "mean error of the kept frames (risk)")


def write_png(image: np.ndarray, uri: str) -> None:
    """Atomically write an (H, W, 3) uint8 RGB image as a PNG to a path, file:// or s3:// URI."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode a {image.shape} {image.dtype} image as PNG")
    storage.write_bytes(uri, encoded.tobytes())


SWEEP_COLOURS = {"finished": "tab:blue", "stopped": "tab:orange", "error": "tab:red", "incomplete": "tab:gray"}


def sweep_plot(trials: list[tuple[str, str, float]], metric: str, best: str | None = None) -> np.ndarray:
    """An RGB uint8 bar chart of each trial's last `metric` (trial, status, value), coloured by status, best starred."""
    figure = Figure(figsize=(max(4.0, 0.5 * len(trials) + 2), 3.2), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    names = [name for name, _, _ in trials]
    values = [value if math.isfinite(value) else 0.0 for _, _, value in trials]
    axes.bar(range(len(trials)), values, color=[SWEEP_COLOURS.get(status, "tab:gray") for _, status, _ in trials])
    for i, (name, _, value) in enumerate(trials):
        label = "n/a" if not math.isfinite(value) else f"{value:.4g}" + (" *" if name == best else "")
        axes.annotate(label, (i, values[i]), ha="center", va="bottom", fontsize=7)
    axes.set_xticks(range(len(trials)), names, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per trial (* best)", fontsize=9)
    present = dict.fromkeys(status for _, status, _ in trials)
    axes.legend(handles=[Patch(color=SWEEP_COLOURS.get(status, "tab:gray"), label=status) for status in present], fontsize=7)
    axes.grid(True, axis="y", alpha=0.3)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def variant_plot(summary: list[dict[str, Any]]) -> np.ndarray:
    """An RGB uint8 figure of a grid sweep's variants, one panel per metric: mean over seeds, ± std as error bars.
    Metrics no variant has a value for (LPIPS without its weights) get no panel; the title names them."""
    every = list(summary[0]["stats"]) if summary else []
    keys = [k for k in every if any(np.isfinite(entry["stats"][k][0]) for entry in summary)]
    missing = [k for k in every if k not in keys]
    figure = Figure(figsize=(max(4.0, 0.45 * len(summary) + 1.5), 2.4 * max(len(keys), 1)), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    names = [entry["variant"] for entry in summary]
    for i, key in enumerate(keys):
        axes = figure.add_subplot(len(keys), 1, i + 1)
        mean, std = np.array([entry["stats"][key] for entry in summary], dtype=float).T
        shown = np.isfinite(mean)
        axes.errorbar(np.flatnonzero(shown), mean[shown], yerr=np.nan_to_num(std[shown]), fmt="o", capsize=3)
        axes.set_xticks(range(len(names)), names if i == len(keys) - 1 else [""] * len(names), rotation=30, ha="right", fontsize=7)
        axes.set_xlim(-0.5, len(names) - 0.5)
        axes.set_ylabel(key, fontsize=8)
        axes.grid(True, axis="y", alpha=0.3)
    figure.suptitle("per variant: mean ± std over seeds" + (f" (no value: {', '.join(missing)})" if missing else ""), fontsize=9)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
