"""``attreval`` command line: run, report, train, list, bench.

User errors (``ValueError``/``TypeError`` raised with "expected …, got …" messages) become one line on
stderr and exit code 2, with no traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

DEFAULT_OUT = "runs/default"


def _run(args: argparse.Namespace) -> int:
    from attreval.config import load_config
    from attreval.run import run
    from attreval.summary import median_table

    config = load_config(args.config)
    out = Path(args.out or (DEFAULT_OUT if args.config is None else f"runs/{Path(args.config).stem}"))
    store = run(config, out, resume=args.resume, device=args.device, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    table = store.results()
    meta = store.read_json("meta.json")
    print(f"{len(table)} rows in {out / 'results.parquet'} ({meta['seconds']:.0f} s on {meta['device']})")
    first = config.models[0].key
    print(f"\nMedian localization score, {first} (rows: method, columns: setting/layer):")
    print(median_table(table, first).to_string(float_format=lambda v: f"{v:.3f}"))
    if not args.no_report:
        from attreval.report import write_report

        print(f"\nreport: {write_report(out)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from attreval.report import write_report

    print(write_report(Path(args.run_dir)))
    return 0


def _list(args: argparse.Namespace) -> int:
    from attreval.methods import METHODS
    from attreval.models.zoo import MODELS
    from attreval.settings import SETTINGS

    what = args.what
    if what == "config":  # the config reference, docs/config.md
        from attreval.config import config_reference

        print(config_reference(), end="")
        return 0
    if what in ("methods", "all"):
        for name, method in METHODS.items():
            print(f"{name:16s} {method.display:18s} {method.family:13s} {method!r}")
    if what in ("settings", "all"):
        for name, cls in SETTINGS.items():
            print(f"{name:16s} {cls.display:18s} {cls.__doc__.splitlines()[0]}")
    if what in ("models", "all"):
        for name in MODELS.names():
            print(f"{name:16s} built-in (shipped weights)")
        print("…and any torchvision classification CNN name (VGG-like or ResNet-like) with local weights")
    return 0


def _train(args: argparse.Namespace) -> int:
    from attreval.train import run_from_args

    return run_from_args(args)


def _bench(args: argparse.Namespace) -> int:
    from attreval.bench import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attreval", description="Evaluate image attribution methods (GridPG, DiFull, DiPart, ML-Att).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the evaluation protocol of a config (default: the embedded Fashion-MNIST default)")
    p.add_argument("config", nargs="?", help="TOML config (default: the embedded default)")
    p.add_argument("--out", help=f"run directory (default: {DEFAULT_OUT} or runs/CONFIG_NAME)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue a run in --out, skipping finished units")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    p = sub.add_parser("report", help="write the HTML report of a run directory")
    p.add_argument("run_dir")
    p.set_defaults(func=_report)

    p = sub.add_parser("list", help="list methods, settings and models, or print the config reference (list config)")
    p.add_argument("what", nargs="?", default="all", choices=["methods", "settings", "models", "all", "config"])
    p.set_defaults(func=_list)

    from attreval.train import configure_parser

    p = sub.add_parser("train", help="train one of the project's models (Fashion-MNIST / CIFAR-10)")
    configure_parser(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("bench", help="time every method against its pass-count limit")
    try:
        from attreval.bench import configure_parser as bench_parser

        bench_parser(p)
    except ImportError:
        pass
    p.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, TypeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"attreval: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attreval: interrupted (finished units are kept; continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
