"""What the report says about reading each figure and table (shown under its heading)."""

from __future__ import annotations

HOW_TO_READ = {
    "intervals": "Each cell: the median score of the unit's maps, its 95 % bootstrap interval, and the number of "
    "maps. The interval resamples grids, not maps (the maps of one grid are dependent), 2,000 times, seeded "
    "per unit (statistics.parquet). Two methods whose intervals overlap may still differ: they scored the "
    "same maps, so the paired tests below are the sharper question.",
    "tiers": "Per setting and layer, tier 1 holds the method with the highest median and every method that a "
    "paired Wilcoxon signed-rank test on the same maps cannot tell apart from it (Holm-corrected over all "
    "pairs of that setting and layer, α = 0.05); tier 2 the same among the rest, and so on. Methods that "
    "agree on every map are never different. Every pair's test is in comparisons.parquet and "
    "`attreval compare RUN --method NAME`.",
    "sample_size": "The half-width of a median's 95 % interval, over the units of each setting (median and "
    "largest), and how many grids would bring it under 0.02 if the spread stays as measured (the "
    "half-width shrinks as 1/√grids). Plan the grids of a run from the second column.",
    "boxplots": "One box per method and layer (colour) over all evaluated maps: the box spans the middle half "
    "of the scores, the line is the median, whiskers reach 1.5 IQR (outliers not drawn). 1 means all "
    "positive attribution lies in the target cell; the lower dashed line is a uniform map (1/n²). "
    "In DiFull at the input layer, anything below 1 is attribution to cells the head cannot see "
    "(unfaithful). Below the input it is not: the maps are bilinearly upsampled to the grid image "
    "before they are scored (PAPER.md §1.5), which spreads even a map that is exactly zero outside "
    "its cell across the border (a 4×4 map scores 0.879, an 8×8 one 0.938). The DiFull native-"
    "resolution table below tells the two apart. A * marks a box whose scores are all equal.",
    "native": "DiFull below the input: the median score as the paper computes it (upsampled, then scored) next to "
    "the median score of the same maps at their own resolution, where each cell is whole pixels "
    "(Run.native_scores, attreval.metric.native_localization_score). A native score of 1 with an "
    "upsampled score below 1 is the upsampling leak, not unfaithfulness; a native score below 1 is "
    "attribution that really lies outside the cell the head can see. – where the map side is not a "
    "multiple of n (cells are not whole pixels there).",
    "aggatt": "Each row is one method; each column averages the (positive) maps of a slice of the instances "
    "sorted by score, best first: 0–2 % are the best localized, 98–100 % the worst. One colour scale "
    "per row (its 99.5th percentile), so rows show how strong the average attribution is in each bin. "
    "The blue square is the target cell. Green = positive attribution. Each bin's title gives its N maps "
    "(one per grid: the maps of the target cell); the line under the figure names the bins' most "
    "frequent classes.",
    "examples": "The instance at the median of each bin: the grid image (grey) and its map (each map on its own "
    "scale); the caption gives the grid, the target cell's class and its score. Use it to see what a "
    "typical map in each bin looks like.",
    "smoothing": "Median (line) and interquartile range (band) of S-IntGrad / S-IxG against the Gaussian kernel "
    "size, expressed as the paper's size at 448 px (Orig = not smoothed). The dashed line is "
    "final-layer Grad-CAM in the same setting; a dotted line is SmoothGrad at that layer. Kernels are "
    "scaled to each map's side, so on small maps the smallest ones become 1 (no smoothing) and "
    "repeat the Orig value.",
    "sweep": "SmoothGrad (15 noisy copies, PAPER.md §6.3) at each evaluated noise level σ (a fraction of each "
    "input's value range): median localization per base method. The star marks the best level, the one "
    "the paper reports. The dashed line is the base smoothed with a Gaussian instead (S-IntGrad / S-IxG, "
    "K = 129 at 448 px), the dotted line the unsmoothed base. The paper finds the S-methods much better "
    "on GridPG except IxG on ResNet18, and slightly worse on DiFull (leakage across cell borders).",
    "costs": "Measured cost of each unit, per grid image, on a log scale: wall-clock seconds (this machine, "
    "includes the smoothing and scoring of the unit) and network passes, counted as the rows pushed "
    "forward plus the backward passes (a backward costs about one forward). Gradient methods on GridPG "
    "and DiPart run one forward per image and one backward per target; a DiFull row runs one head's "
    "cell only. GridPG attributes its n² cells, DiFull / DiPart only the corner heads.",
    "smoothing_cost": "The cost of smoothing against SmoothGrad (PAPER.md §7): an S-method makes the passes of its "
    "base plus one Gaussian convolution per map (timed here on the unit's maps, no network pass); "
    "SmoothGrad makes num_samples (15) times the base's passes.",
    "heatmap": "Spearman rank correlation of the per-instance GridPG scores of every pair of (method, layer), "
    "paired on grid and cell. High ρ: the two evaluations find the same instances easy and hard. "
    "Black lines separate layers.",
    "reference": "The Table 1/2 analogue: Spearman ρ between final-layer Grad-CAM and input-layer S-IntGrad / "
    "S-IxG scores on GridPG, per kernel size (Orig = not smoothed); one row per method and model. "
    "The paper finds ρ rising with the kernel for S-IntGrad on both of its models (0.34 → 0.80 on "
    "VGG11) and for S-IxG on VGG11 only.",
}
