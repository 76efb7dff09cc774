"""Pictures: training curves, rank lists, contact sheets, t-SNE maps of features, distance histograms.

Drawn with matplotlib's Agg backend (files only, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import hsv_to_rgb  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image, ImageDraw, ImageOps  # noqa: E402

CURVE_DISTANCES = {"raw": ("raw", "tab:blue"), "classic": ("classic re-ranking", "tab:orange"),
                   "hard": ("hard-weight re-ranking", "tab:green")}


def plot_training_curves(metrics: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """``metrics.csv`` rows (one per evaluation, ``epoch`` 0 = zero-shot) -> a PNG with two panels:
    test mAP and rank-1 per distance against the epoch, and the mean training loss per epoch."""
    path = Path(path)
    fig, (scores_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for key, (label, colour) in CURVE_DISTANCES.items():
        for score, style in (("map", "-o"), ("rank1", ":x")):
            column = f"{score}_{key}"
            if column in metrics and metrics[column].notna().any():
                scores_ax.plot(metrics["epoch"], 100 * metrics[column], style, color=colour,
                               label=f"{'mAP' if score == 'map' else 'rank-1'} {label}")
    scores_ax.set(xlabel="epoch", ylabel="%", title="held-out scores")
    scores_ax.grid(alpha=0.3)
    scores_ax.legend(fontsize=7)
    trained = metrics[metrics["epoch"] > 0] if "train_loss" in metrics else metrics.iloc[0:0]
    if not trained.empty and trained["train_loss"].notna().any():
        loss_ax.plot(trained["epoch"], trained["train_loss"], "-o", color="tab:red")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="mean training loss")
    loss_ax.grid(alpha=0.3)
    for ax in (scores_ax, loss_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- rank lists

def plot_rank_list(dist: np.ndarray, query_ids: np.ndarray | None, gallery_ids: np.ndarray | None,
                   query_paths: Sequence[str | Path], gallery_paths: Sequence[str | Path], queries: Sequence[int],
                   path: str | Path, top: int = 10, query_notes: Sequence[str] | None = None, title: str = "") -> Path:
    """A PNG with one row per chosen query: the query image, then its ``top`` nearest gallery images,
    framed green when they show the query's player and red otherwise, each with its rank, id and distance.

    dist: (num_query, num_gallery) distances (smaller = closer); ids: (num_query,), (num_gallery,), or
    both None when the identities are unknown (grey frames, file names instead of ids);
    paths: the image files in the same orders; queries: row indices of ``dist`` to draw;
    query_notes: one short text per chosen query shown under it (e.g. its AP).
    """
    known = query_ids is not None and gallery_ids is not None
    path = Path(path)
    queries = list(queries)
    top = min(top, dist.shape[1])
    rows = np.asarray(dist)[queries]  # (r, n)
    order = np.argsort(rows, axis=1, kind="stable")[:, :top]  # (r, top) gallery indices, nearest first
    fig, axes = plt.subplots(len(queries), top + 1, figsize=(1.05 * (top + 1), 2.15 * len(queries)), squeeze=False,
                             gridspec_kw={"wspace": 0.08, "hspace": 0.45})
    for r, q in enumerate(queries):
        note = f"\n{query_notes[r]}" if query_notes is not None else ""
        name = f"query {query_ids[q]}" if known else f"query\n{Path(query_paths[q]).stem[:14]}"
        _image_cell(axes[r, 0], query_paths[q], "tab:blue", f"{name}{note}", bold=True)
        for k, g in enumerate(order[r]):
            if known:
                colour, label = ("tab:green" if gallery_ids[g] == query_ids[q] else "tab:red"), f"id {gallery_ids[g]}"
            else:
                colour, label = "tab:gray", Path(gallery_paths[g]).stem[:10]
            _image_cell(axes[r, k + 1], gallery_paths[g], colour, f"#{k + 1} {label}\n{rows[r, g]:.3f}")
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / height)
    legend = "frame: green = same player as the query, red = another player" if known else "nearest gallery crops, closest first"
    fig.suptitle((title + "\n" if title else "") + legend, fontsize=9, y=1 - 0.08 / height)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _image_cell(ax: plt.Axes, image_path: str | Path, colour: str, text: str, bold: bool = False) -> None:
    with Image.open(image_path) as image:
        ax.imshow(np.asarray(image.convert("RGB")))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3.5)
    ax.set_title(text, fontsize=6.5, fontweight="bold" if bold else "normal", pad=3)


def contact_sheet(image_paths: Sequence[str | Path], path: str | Path, title: str = "", columns: int = 10,
                  cell: tuple[int, int] = (128, 64), max_images: int = 60) -> Path:
    """A PNG grid of crops (e.g. all crops given one identity): each letterboxed into a ``cell`` of
    (height, width) pixels on grey, ``columns`` per row, at most ``max_images`` (the rest counted in
    the title)."""
    path = Path(path)
    shown = list(image_paths)[:max_images]
    height, width = cell
    columns = max(1, min(columns, len(shown)))
    rows = -(-len(shown) // columns)
    header = 18
    sheet = Image.new("RGB", (columns * (width + 4) + 4, header + rows * (height + 4) + 4), (200, 200, 200))
    for index, image_path in enumerate(shown):
        with Image.open(image_path) as image:
            crop = ImageOps.contain(image.convert("RGB"), (width, height))
        left = 4 + (index % columns) * (width + 4) + (width - crop.width) // 2
        top = header + 4 + (index // columns) * (height + 4) + (height - crop.height) // 2
        sheet.paste(crop, (left, top))
    hidden = len(image_paths) - len(shown)
    text = title + (f" (+{hidden} more)" if hidden > 0 else "")
    ImageDraw.Draw(sheet).text((4, 3), text, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# ---------------------------------------------------------------- feature maps

def tsne_points(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) float32 t-SNE coordinates (scikit-learn, PCA start; the perplexity is
    lowered to (N - 1) / 3 for small sets, which t-SNE needs)."""
    from sklearn.manifold import TSNE  # imported here: the other pictures do not need scikit-learn

    features = np.asarray(features, dtype=np.float32)
    if len(features) < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {len(features)}")
    perplexity = min(perplexity, (len(features) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features).astype(np.float32)


def distinct_colours(count: int, seed: int = 0) -> np.ndarray:
    """(count, 3) RGB colours that stay distinguishable for many classes: tab20 up to 20 (its ten dark
    shades first), else hues spread by the golden ratio with alternating brightness, in a seeded random order."""
    if count <= 20:
        tab20 = np.asarray(plt.get_cmap("tab20").colors)
        return np.concatenate([tab20[0::2], tab20[1::2]])[:count]
    hues = (np.arange(count) * 0.618033988749895) % 1.0
    saturation = np.where(np.arange(count) % 3 == 2, 0.45, 0.85)
    value = np.where(np.arange(count) % 2 == 0, 0.95, 0.65)
    colours = hsv_to_rgb(np.stack([hues, saturation, value], axis=1))
    return colours[np.random.default_rng(seed).permutation(count)]


def plot_feature_map(points: np.ndarray, players: np.ndarray, path: str | Path, is_query: np.ndarray | None = None,
                     coloured: bool = True, label_players: bool = True, title: str = "") -> Path:
    """Scatter of 2-D feature coordinates (e.g. a t-SNE map), one colour per player.

    points: (N, 2); players: (N,) ids; is_query: (N,) bool, queries drawn as stars (gallery as dots);
    coloured=False draws every point grey (features without identities, e.g. the challenge);
    label_players: write each player's id at the centre of its points (up to 80 players).
    """
    path = Path(path)
    points, players = np.asarray(points), np.asarray(players)
    is_query = np.zeros(len(points), bool) if is_query is None else np.asarray(is_query, bool)
    unique, codes = np.unique(players, return_inverse=True)
    colours = distinct_colours(len(unique))[codes] if coloured else np.full((len(points), 3), 0.45)
    fig, ax = plt.subplots(figsize=(8, 8), constrained_layout=True)
    ax.scatter(points[~is_query, 0], points[~is_query, 1], c=colours[~is_query], s=12, alpha=0.75, linewidths=0,
               label="gallery")
    if is_query.any():
        ax.scatter(points[is_query, 0], points[is_query, 1], c=colours[is_query], s=110, marker="*",
                   edgecolors="black", linewidths=0.6, label="query")
    if coloured and label_players and len(unique) <= 80:
        for code, player in enumerate(unique):
            centre = np.median(points[codes == code], axis=0)
            ax.annotate(str(player), centre, fontsize=7, ha="center", va="center", alpha=0.8)
    ax.set(xticks=[], yticks=[], title=title or "feature map")
    ax.legend(loc="best", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- distance histograms

def plot_distance_histograms(edges: np.ndarray, intra: np.ndarray, inter: np.ndarray, path: str | Path,
                             xlabel: str = "distance", title: str = "", notes: Sequence[str] = (),
                             display_bins: int = 60) -> Path:
    """Two overlaid density histograms of pair distances: same player (intra) and different players (inter).

    edges: (bins + 1,) evenly spaced bin edges; intra, inter: (bins,) pair counts per bin; notes: lines of text
    written in the corner (e.g. the separation AUC). The range where the pairs are is drawn with
    about ``display_bins`` bins (adjacent fine bins summed).
    """
    path = Path(path)
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.stack([np.asarray(intra, np.float64), np.asarray(inter, np.float64)])  # (2, bins)
    occupied = np.flatnonzero(counts.sum(0) > 0)
    if occupied.size:
        first, last = occupied[0], occupied[-1] + 1
        factor = max(1, -(-(last - first) // display_bins))
        last = min(len(edges) - 1, first + factor * -(-(last - first) // factor))
        counts = counts[:, first:last]
        if counts.shape[1] % factor:  # the fine bins ran out at the top of the range: pad with empty ones
            counts = np.pad(counts, ((0, 0), (0, factor - counts.shape[1] % factor)))
        counts = counts.reshape(2, -1, factor).sum(2)
        step = edges[1] - edges[0]
        edges = edges[first] + step * factor * np.arange(counts.shape[1] + 1)
    widths = np.diff(edges)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for values, label, colour in ((counts[0], "same player (intra)", "tab:green"), (counts[1], "different players (inter)", "tab:red")):
        density = values / (values.sum() * widths) if values.sum() else values
        ax.stairs(density, edges, fill=True, alpha=0.35, color=colour, label=f"{label}, {int(values.sum()):,} pairs")
        ax.stairs(density, edges, color=colour, linewidth=1.0)
    ax.set_ylim(0, 1.3 * ax.get_ylim()[1])  # room for the legend and the notes
    if notes:
        ax.text(0.99, 0.97, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    ax.set(xlabel=xlabel, ylabel="density", title=title or "pair distances")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
