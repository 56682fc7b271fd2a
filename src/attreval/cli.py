"""``attreval`` command line: run, report, verify, compare, check-method, train, list, bench.

User errors (``ValueError``/``TypeError`` raised with "expected …, got …" messages) and file-system errors
(``OSError``: a full disk, a read-only file system, a permission) become one line on stderr and exit code 2,
with no traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_OUT = "runs/default"


def _run(args: argparse.Namespace) -> int:
    from attreval.config import load_config
    from attreval.runs.run import run
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
    print(f"\n95 % intervals: {out / 'statistics.parquet'}; which differences are real: attreval compare {out} [--method NAME]")
    if not args.no_report:
        from attreval.report import write_report

        print(f"\nreport: {write_report(out)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from attreval.report import write_report

    print(write_report(Path(args.run_dir)))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from attreval.runs.manifest import Manifest
    from attreval.runs.verify import verify_run

    root = Path(args.run_dir)
    if not (root / "config.json").exists() and not (root / "manifest").is_dir():
        raise ValueError(f"expected a run directory (with config.json and manifest/), got {root}")
    problems = verify_run(root, strict=True)
    for line in problems:
        print(f"attreval: bad file: {line}", file=sys.stderr)
    if problems:
        return 2
    print(f"ok: {sum(1 for _ in Manifest(root).records())} files of {root} match their manifest records")
    return 0


def _list(args: argparse.Namespace) -> int:
    from attreval.methods import METHODS
    from attreval.models.zoo import MODELS
    from attreval.settings import SETTINGS

    what = args.what
    if what == "layers":
        return _list_layers(args)
    if what == "config":  # the config reference, docs/config.md
        from attreval.config import config_reference

        print(config_reference(), end="")
        return 0
    if what == "methods" and args.markdown:  # the generated tables of README.md and docs/methods.md
        from attreval.methods.catalogue import method_table

        print(method_table(), end="")
        return 0
    if what in ("methods", "all"):
        for name, method in METHODS.items():
            needs = ",".join(sorted(method.needs)) or "-"  # what it needs of the tail (Method.needs)
            print(f"{name:24s} {method.display:22s} {method.family:13s} needs={needs:32s} {method!r}")
        _list_plugins()
    if what in ("settings", "all"):
        for name, cls in SETTINGS.items():
            print(f"{name:16s} {cls.display:18s} {(cls.__doc__ or '').strip().splitlines()[0]}")
    if what in ("models", "all"):
        for name in MODELS.names():
            print(f"{name:16s} built-in (shipped weights)")
        print('…and any torchvision classification CNN name or timm:NAME with local weights, or architecture = "module:function"')
    if what in ("splitters", "all"):
        from attreval.models.splitters import SPLITTERS

        for name, splitter in SPLITTERS.items():
            print(f"{name:16s} splitter         {(type(splitter).__doc__ or '').strip().splitlines()[0]}")
    return 0


def _list_plugins() -> None:
    """Installed plugin methods (entry points ``attreval.methods``), each imported; a broken one is listed with its error."""
    from attreval.methods.sources import find_method, plugin_entry_points

    for name, point in sorted(plugin_entry_points().items()):
        try:
            method = find_method(name)
            print(f"{name:24s} {method.display:22s} {method.family:13s} plugin {point.value}: {method!r}")
        except ValueError as err:
            print(f"{name:24s} {'(broken plugin)':22s} {'':13s} {err}")


def _list_layers(args: argparse.Namespace) -> int:
    """``attreval list layers MODEL``: every layer of the split model with its activation shape."""
    import torch

    from attreval.models.loading import build_architecture
    from attreval.models.splitters import describe_layers, in_channels, probe_input, split_model

    if not args.model:
        raise ValueError("expected a model name after 'list layers' (e.g. attreval list layers resnet18), got none")
    model = build_architecture(args.model, args.num_classes, args.architecture or "")
    shape = _input_size(args.input_size, in_channels(model)) if args.input_size else None
    staged = split_model(model, shape)
    probe = probe_input(shape or _default_shape(model), torch.device("cpu"))
    print(f"{staged.architecture}: layers for a {tuple(probe.shape[1:])} input (middle / final by the splitter's rule)")
    for layer, alias, act in describe_layers(staged, probe):
        print(f"{layer:28s} {alias:8s} {'×'.join(str(v) for v in act)}")
    for alias, reason in getattr(staged, "refusals", {}).items():  # e.g. no stage above final's resolution
        print(f"{alias}: not given — {reason}")
    return 0


def _default_shape(model) -> tuple[int, int, int]:
    from attreval.models.splitters import splitter_for

    return splitter_for(model)[1].probe_shape(model)


def _input_size(text: str, channels: int) -> tuple[int, int, int]:
    """``224`` (square, the model's channels), ``224x160`` or ``3x224x224``."""
    try:
        values = [int(v) for v in text.lower().replace("×", "x").split("x")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = [channels, values[0], values[0]]
    elif len(values) == 2:
        values = [channels, *values]
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"expected --input-size like 224, 224x160 or 3x224x224, got {text!r}")
    return values[0], values[1], values[2]


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

    p = sub.add_parser("verify", help="check every file of a run directory against its manifest (exit 2: bad files, one line each)")
    p.add_argument("run_dir")
    p.set_defaults(func=_verify)

    p = sub.add_parser("list", help="list methods, settings, models and splitters, a model's layers, or the config reference")
    p.add_argument("what", nargs="?", default="all", choices=["methods", "settings", "models", "splitters", "layers", "config", "all"])
    p.add_argument("--markdown", action="store_true", help="with methods: the Markdown table of README.md and docs/methods.md")
    p.add_argument("model", nargs="?", help="with 'layers': a model name (resnet18, timm:efficientnet_b0, fashion_vgg …)")
    p.add_argument("--input-size", help="with 'layers': input size, e.g. 224 or 3x224x224 (default: the model's)")
    p.add_argument("--num-classes", type=int, default=0, help="with 'layers': classifier outputs (default 1000)")
    p.add_argument("--architecture", help='with \'layers\': a factory "module:function" or "file.py:function"')
    p.set_defaults(func=_list)

    import attreval.compare as comparison

    p = sub.add_parser(
        "compare", help="which methods differ: one method against the others, or the tier table (paired tests on the same maps)"
    )
    comparison.configure_parser(p)
    p.set_defaults(func=comparison.run_from_args)

    from attreval.methods import contract

    p = sub.add_parser("check-method", help="check a method (yours: file.py:object) against the contract every built-in method meets")
    contract.configure_parser(p)
    p.set_defaults(func=contract.run_from_args)

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
    except OSError as err:
        print(f"attreval: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attreval: interrupted (finished units are kept; continue with --resume)", file=sys.stderr)
        return 130


def os_error_line(err: OSError) -> str:
    """One line for a file-system error: what failed, on which path, and what to do."""
    name = errno.errorcode.get(err.errno, "") if err.errno is not None else ""
    where = f" {err.filename}" if err.filename is not None else ""
    if err.filename2 is not None:
        where += f" -> {err.filename2}"
    reason = (err.strerror or str(err) or type(err).__name__).strip().splitlines()[0]
    advice = {
        "ENOSPC": "; free some space, then continue with --resume",
        "EDQUOT": "; free some space, then continue with --resume",
        "EROFS": "; use an --out on a writable file system",
        "EACCES": "; check the permissions or use another --out",
        "EPERM": "; check the permissions or use another --out",
    }.get(name, "")
    return f"expected to read or write{where or ' a file'}, got {reason}{f' ({name})' if name else ''}{advice}"


if __name__ == "__main__":
    sys.exit(main())
