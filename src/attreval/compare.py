"""``attreval compare RUN_DIR``: one method against the others, or the tier table (:mod:`attreval.analysis.comparison`)."""

from __future__ import annotations

from attreval.analysis.statistics import ALPHA
from attreval.runs.reader import load_run


def configure_parser(parser) -> None:
    parser.add_argument("run_dir")
    parser.add_argument("--method", help="compare this method with every other (default: the tier table)")
    parser.add_argument("--model", help="one model (default: every model)")
    parser.add_argument("--setting", help="one setting (default: every setting)")
    parser.add_argument("--layer", help="one layer (default: every layer)")
    parser.add_argument("--kernel-ref", type=int, default=0, help="smoothing level: the paper's K (default 0: unsmoothed maps)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level after Holm's correction (default {ALPHA})")


def run_from_args(args) -> int:
    run = load_run(args.run_dir)
    table = run.compare(args.method, model=args.model, setting=args.setting, layer=args.layer, kernel_ref=args.kernel_ref, alpha=args.alpha)
    if args.method:
        columns = ["model", "setting", "layer", "other", "n", "median", "median_other", "median_difference", "p_holm", "verdict"]
        print(f"{args.method} against every other method (paired Wilcoxon on the same maps, Holm-corrected per group, α = {args.alpha}):")
    else:
        columns = ["model", "setting", "layer", "tier", "method", "median", "ci_low", "ci_high"]
        print(
            f"Tiers: tier 1 = the best median and every method not distinguishable from it at α = {args.alpha} (95 % bootstrap intervals):"
        )
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0
