"""Training of the project's own models (``attreval train``).

Seeded and reproducible on a given machine: ``torch.manual_seed(seed)`` fixes the initialisation and dropout, and
one ``torch.Generator`` drives the shuffling and the augmentation (random 32x32 crop of the image padded by 2 px
with its background value, and horizontal flips), done on tensors. AdamW with a one-cycle schedule, plain
cross-entropy (no label smoothing: the grid builder needs images classified with softmax >= 0.99, PAPER.md §1.1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from attreval.models.zoo import MODELS, build_model, model_names, weights_path

__all__ = ["TrainConfig", "DEFAULTS", "train", "evaluate", "configure_parser", "run_from_args"]

logger = logging.getLogger(__name__)

CONFIDENCE = 0.99  # the grid builder's threshold (PAPER.md §1.1)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (defaults per model in :data:`DEFAULTS`)."""

    epochs: int
    batch_size: int = 128
    lr: float = 2e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4


DEFAULTS: dict[str, TrainConfig] = {
    "fashion_vgg": TrainConfig(epochs=12),
    "fashion_resnet": TrainConfig(epochs=8),
    "cifar_vgg11": TrainConfig(epochs=30),
    # ViTs want more weight decay than CNNs; 40 epochs of 7,000 images (--holdout 3000) take ~13 min on one core
    # (20 epochs at lr 1e-3 underfit: 74.6 % held-out accuracy, 64 of 3,000 images confident enough for grids)
    "fashion_vit": TrainConfig(epochs=40, lr=2e-3, weight_decay=0.05),
}


def _datasets(
    model_name: str, data_root: str | os.PathLike | None, holdout: int | None = None
) -> tuple[TensorDataset, TensorDataset, torch.Tensor]:
    """Train and test datasets of the model's dataset, plus the normalised value of a black pixel ``(C,)``.

    ``holdout`` (Fashion-MNIST only): train on the embedded test images ``holdout …`` and evaluate on the first
    ``holdout``, for machines without the 60,000-image training split; a run with ``[data] limit = holdout``
    then draws its grids only from images the model never saw.
    """
    dataset = MODELS.get(model_name).dataset
    if holdout is not None and dataset != "fashion_mnist":
        raise ValueError(f"expected a Fashion-MNIST model for --holdout, got {model_name!r} ({dataset})")
    if dataset == "fashion_mnist":
        from attreval.data.fashion_mnist import MEAN, STD, fashion_mnist_dataset

        background = torch.tensor([-MEAN / STD])
        if holdout is not None:
            images, labels = fashion_mnist_dataset("test").tensors
            if not 0 < holdout < len(labels):
                raise ValueError(f"expected --holdout in [1, {len(labels) - 1}], got {holdout}")
            return (TensorDataset(images[holdout:], labels[holdout:]), TensorDataset(images[:holdout], labels[:holdout]), background)
        return fashion_mnist_dataset("train", data_root), fashion_mnist_dataset("test", data_root), background
    from attreval.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, cifar10_dataset

    if data_root is None:
        raise ValueError(f"expected --data DIR with the CIFAR-10 python batches for {model_name!r}, got none")
    background = -torch.tensor(CIFAR10_MEAN) / torch.tensor(CIFAR10_STD)
    return cifar10_dataset(data_root, "train"), cifar10_dataset(data_root, "test"), background


def augment(images: torch.Tensor, fill: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop of the image padded by ``pad`` px with ``fill``, then a random horizontal flip.

    Args:
        images: float ``(B, C, H, W)``.
        fill: padding value per channel ``(C,)`` (the normalised background).
        generator: source of the crop offsets and flips.
        pad: maximal shift in pixels.

    Returns:
        float ``(B, C, H, W)``.
    """
    batch, _, height, width = images.shape
    fill = fill.to(images).view(1, -1, 1, 1)
    padded = F.pad(images - fill, (pad, pad, pad, pad)) + fill
    dy, dx = torch.randint(0, 2 * pad + 1, (2, batch, 1), generator=generator)
    flip = torch.rand(batch, 1, generator=generator) < 0.5
    cols = torch.arange(width).view(1, -1)
    cols = torch.where(flip, width - 1 - cols, cols) + dx
    rows = torch.arange(height).view(1, -1) + dy
    index = torch.arange(batch).view(-1, 1, 1)
    # Advanced indices separated by a slice put their dims first: (B, H, W, C).
    out = padded[index, :, rows.view(batch, -1, 1), cols.view(batch, 1, -1)]
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 500, device: str = "cpu") -> dict[str, float]:
    """Accuracy and count of correct predictions with softmax >= 0.99 of an eval-mode model.

    Returns:
        ``{"accuracy": float in [0, 1], "confident_correct": int, "num_images": int}``.
    """
    images, labels = dataset.tensors
    correct, confident = 0, 0
    for start in range(0, len(labels), batch_size):
        probs = model(images[start : start + batch_size].to(device)).softmax(1).cpu()
        target = labels[start : start + batch_size]
        hit = probs.argmax(1) == target
        correct += int(hit.sum())
        confident += int((hit & (probs.gather(1, target[:, None])[:, 0] >= CONFIDENCE)).sum())
    return {"accuracy": correct / len(labels), "confident_correct": confident, "num_images": len(labels)}


def _fit(model: nn.Module, data: TensorDataset, fill: torch.Tensor, config: TrainConfig, seed: int, device: str, progress: bool) -> float:
    """Train ``model`` in place; returns the mean loss of the last epoch."""
    images, labels = data.tensors
    steps = -(-len(labels) // config.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for step in bar:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = augment(images[batch], fill, generator).to(device, memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        logger.info("epoch %d/%d: mean training loss %.4f", epoch + 1, config.epochs, total / steps)
    return total / steps


def _save(model: nn.Module, out: Path, metadata: dict) -> dict:
    """Write the state dict atomically, then the JSON sidecar ``out.with_suffix('.json')`` with its sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    tmp = out.with_name(out.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)
    metadata = {**metadata, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "bytes": out.stat().st_size}
    sidecar = out.with_suffix(".json")
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(json.dumps(metadata, indent=2) + "\n")
    os.replace(tmp, sidecar)
    return metadata


def train(
    model_name: str,
    data_root: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    lr: float | None = None,
    device: str = "cpu",
    progress: bool = True,
    holdout: int | None = None,
) -> dict:
    """Train a registered model, evaluate it on the test split and save it.

    Args:
        model_name: one of :func:`attreval.models.zoo.model_names`.
        data_root: Fashion-MNIST IDX directory (``None``: ``/usr/share/datasets/fashion-mnist``) or CIFAR-10
            python-batches directory (required).
        out: state-dict path; ``None``: the package's ``weights/{model_name}.pt``. A ``.json`` sidecar is
            written next to it.
        epochs, batch_size, lr: override :data:`DEFAULTS`.
        seed: seeds the initialisation, dropout, shuffling and augmentation.
        device: torch device string.
        progress: show tqdm progress bars.
        holdout: Fashion-MNIST without the training split: train on the embedded test images from ``holdout`` on,
            evaluate on the first ``holdout`` (recorded in the sidecar as ``train_data``/``test_data``).

    Returns:
        The metadata written to the sidecar: test accuracy, confident-correct count, hyper-parameters, wall time,
        torch version, sha256 of the weights file.
    """
    MODELS.get(model_name)  # unknown names fail here, with a did-you-mean
    default = DEFAULTS[model_name]
    config = TrainConfig(
        epochs=epochs or default.epochs,
        batch_size=batch_size or default.batch_size,
        lr=lr or default.lr,
        weight_decay=default.weight_decay,
    )
    start = time.perf_counter()
    train_set, test_set, fill = _datasets(model_name, data_root, holdout)
    with torch.random.fork_rng(devices=[]):  # seed init and dropout without touching the caller's RNG state
        torch.manual_seed(seed)
        # Module.to takes a device and a memory_format together at run time; torch's overloads list them apart
        model = build_model(model_name).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        loss = _fit(model, train_set, fill, config, seed, device, progress)
    model.eval()
    metrics = evaluate(model, test_set, device=device)
    wall = time.perf_counter() - start
    logger.info("%s: test accuracy %.4f, %d confident correct, %.0f s", model_name, metrics["accuracy"], metrics["confident_correct"], wall)
    metadata = {
        "model": model_name,
        **{f"test_{key}": value for key, value in metrics.items()},
        **asdict(config),
        "seed": seed,
        "final_train_loss": loss,
        "train_images": len(train_set),
        **(
            {
                "train_data": f"embedded Fashion-MNIST test images {holdout}-{holdout + len(train_set) - 1}",
                "test_data": f"embedded Fashion-MNIST test images 0-{holdout - 1}",
            }
            if holdout is not None
            else {}
        ),
        "wall_time_s": round(wall, 1),
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "device": device,
    }
    return _save(model, Path(out) if out is not None else weights_path(model_name), metadata)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``attreval train`` arguments to ``parser``."""
    parser.add_argument("--model", required=True, choices=model_names(), help="model to train")
    parser.add_argument("--data", default=None, help="Fashion-MNIST IDX directory or CIFAR-10 python-batches directory")
    parser.add_argument("--out", default=None, help="output .pt file (default: the package's weights/{model}.pt)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default per model)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 128)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--holdout",
        type=int,
        default=None,
        help="Fashion-MNIST without the training split: train on the embedded test images from N on, "
        "evaluate on the first N (the images a run with [data] limit = N draws its grids from)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``attreval train`` from parsed arguments; returns the exit code (errors propagate as ``ValueError``)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    metadata = train(
        args.model,
        data_root=args.data,
        out=args.out,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        progress=not args.no_progress,
        holdout=args.holdout,
    )
    logger.info("wrote %s", json.dumps(metadata))
    return 0


if __name__ == "__main__":  # python -m attreval.train ...
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    raise SystemExit(run_from_args(configure_parser(argparse.ArgumentParser(prog="attreval train")).parse_args()))
