"""A CNN as a sequence of named stages plus two heads (PAPER.md §1.2–§1.4, §2).

A *layer* is a point between stages: ``"input"`` (the image) or the name of the stage that ends there.
Attributing at layer L means treating the activations at L as the input of the rest of the network
(ML-Att), so every method works at every layer without layer-specific code.

Two heads are kept apart because the settings pool differently; both are ``nn.Module`` s, so a module
hook (Guided Backprop, LRP) sees the classifier in every setting:

* ``cell_head`` maps the backbone features of **one cell** ``(B, C, d, d)`` to logits ``(B, K)``; it is the
  model's own, unmodified classifier (DiFull, DiPart).
* ``grid_head`` maps the features of a **whole grid** ``(B, C, n·d, n·d)`` to one output ``(B, K)`` (GridPG).
  For global-pooling models it is the model's own head; a fully connected VGG classifier becomes
  ``Conv2d`` modules sliding with stride 1, averaged over the windows (§1.2). ``None`` when the model's
  head cannot be pooled over a grid (GridPG is then refused with a one-line error).
* ``part_head`` (optional) maps **one cell's block** of a grid's final features to logits (DiPart), where that
  differs from ``cell_head`` (a class-token transformer: its class token depends on the whole grid, so the part
  head reads the mean of the cell's patch tokens); ``None`` means ``cell_head``.

The splitters that build a :class:`StagedModel` from a torchvision/timm/any model live in
:mod:`attreval.models.splitters`; every split is checked against the model's own output
(:meth:`StagedModel.verify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attreval.validation import first_line as _first_line


@dataclass(frozen=True, eq=False)
class StagedModel:
    """A model split into stages.

    Attributes:
        stages: ``(name, module)`` pairs; stage i maps the activations at layer i-1 to layer i.
        cell_head: ``nn.Module``: one cell's final features ``(B, C, d, d)`` → logits ``(B, K)``.
        grid_head: ``nn.Module`` or ``None``: a grid's final features ``(B, C, n·d, n·d)`` → logits ``(B, K)``.
        aliases: paper layer names (``"middle"``, ``"final"``) → stage names.
        architecture: a short description used in error messages and metadata.
        part_head: ``nn.Module`` or ``None``: one cell's block of a grid's final features → logits ``(B, K)`` (DiPart),
            where it differs from ``cell_head``.
        window: for a fully connected classifier, the side ``d`` of the final features it was trained on
            (GridPG slides it over the grid, so a grid's cells must give exactly ``d × d`` features); ``None``
            for pooling heads, which take any size.
    """

    stages: tuple[tuple[str, nn.Module], ...]
    cell_head: nn.Module
    grid_head: nn.Module | None
    aliases: dict[str, str] = field(default_factory=dict)
    architecture: str = "custom"
    window: int | None = None
    part_head: nn.Module | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple((str(name), module) for name, module in self.stages))
        if not self.stages:
            raise ValueError(f"expected at least one stage in the StagedModel of {self.architecture}, got none")
        for name, module in self.stages:
            if not callable(module):
                raise TypeError(f"expected a callable module for stage '{name}', got {type(module).__name__}")
        names = [name for name, _ in self.stages]
        if len(set(names)) != len(names) or "input" in names:
            raise ValueError(f"expected distinct stage names other than 'input', got {names}")
        for head in ("cell_head", "grid_head", "part_head"):
            value = getattr(self, head)
            if value is not None and not isinstance(value, nn.Module):
                raise TypeError(
                    f"expected {head} to be an nn.Module (wrap a function in attreval.models.staged.Lambda), got {type(value).__name__}"
                )
        for alias, target in self.aliases.items():
            if target not in names:
                raise ValueError(f"expected alias '{alias}' to name a stage, got '{target}' (stages: {', '.join(names)})")

    @property
    def layer_names(self) -> list[str]:
        """Every layer a method can be applied at, input first."""
        return ["input"] + [name for name, _ in self.stages]

    def resolve(self, layer: str) -> str:
        """The stage name for a layer name or alias; unknown names raise with a did-you-mean."""
        from attreval.registry import unknown_name_error

        name = self.aliases.get(layer, layer)
        if name not in self.layer_names:
            choices = self.layer_names + sorted(self.aliases)
            raise unknown_name_error(f"layer of this {self.architecture}", layer, choices)
        return name

    def index(self, layer: str) -> int:
        """Position of a layer: 0 for the input, i for the output of stage i."""
        return self.layer_names.index(self.resolve(layer))

    def run(self, x: Tensor, start: int = 0, end: int | None = None) -> Tensor:
        """Activations at layer ``end`` (default: after the last stage) from activations at layer ``start``."""
        end = len(self.stages) if end is None else end
        for _, module in self.stages[start:end]:
            x = module(x)
        return x

    def grid_head_or_error(self) -> nn.Module:
        """``grid_head``, or a one-line error saying why GridPG cannot pool this model's head."""
        if self.grid_head is None:
            raise ValueError(
                f"expected a head that can be pooled over a grid for GridPG, got {self.architecture}, whose classifier "
                "needs features of one cell's size; use DiFull/DiPart, or pass a StagedModel with a grid_head"
            )
        return self.grid_head

    # ----------------------------------------------------------------------------------------------
    # Checks

    def verify(self, model: nn.Module, probe: Tensor, *, rtol: float = 1e-4) -> None:
        """Check that stages ∘ ``cell_head`` reproduce ``model(probe)`` (one cell, ``(B, C, H, W)``), and that
        ``grid_head`` on the features of a 2×2 tiling of one cell's features pools like ``cell_head``.

        Raises a one-line ``ValueError`` naming the model and the largest difference otherwise.
        """
        with torch.no_grad():
            try:
                expected = model(probe)
                features = self.run(probe)
                got = self.cell_head(features)
            except Exception as err:
                raise ValueError(
                    f"expected the split of {self.architecture} to run on a {tuple(probe.shape[1:])} input, got {type(err).__name__}: {_first_line(err)}"
                ) from None
            if not isinstance(expected, Tensor):
                raise ValueError(f"expected {self.architecture} to return a logits tensor, got {type(expected).__name__}")
            if not torch.isfinite(expected).all():
                raise ValueError(
                    f"expected finite model outputs, got NaN/inf from {self.architecture} on a random probe (check its weights)"
                )
            _check_close(self.architecture, "stages + cell head", got, expected, rtol)
            if self.grid_head is not None and self.window is None:
                # a pooling head is the same on a 2×2 tiling of one cell's features (GAP of a tiling = GAP)
                tiled = features.repeat(1, 1, 2, 2)
                try:
                    pooled = self.grid_head(tiled)
                except Exception as err:
                    raise ValueError(
                        f"expected the grid head of {self.architecture} to run on grid features, got {type(err).__name__}: {_first_line(err)}"
                    ) from None
                _check_close(self.architecture, "grid head on a tiled cell", pooled, self.grid_head(features), rtol)

    def check_cell(
        self, cell_shape: Sequence[int], gridpg: bool, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        """One-line error before a run when cells of ``cell_shape`` ``(C, H, W)`` cannot be evaluated.

        Runs the stages on one zero cell (wrong channel counts or too small cells fail here, not mid-run); with
        ``gridpg``, a fully connected classifier must see exactly its training window of final features. The probe
        forward runs once per (cell shape, device, dtype) and parameter set (:meth:`_probe_side`).
        """
        side = self._probe_side(tuple(int(v) for v in cell_shape), torch.device(device), dtype)
        if gridpg:
            self.grid_head_or_error()
            if self.window is not None and side != (self.window, self.window):
                scale = cell_shape[1] * self.window // max(side[0], 1)
                raise ValueError(
                    f"expected cells giving {self.window}×{self.window} final features for GridPG's convolutional classifier "
                    f"of {self.architecture} (its fully connected layer slid over the grid's feature map as a {self.window}×{self.window} "
                    f"window, one window per cell: about {scale}-px cells for this model, whatever size it was trained at), got "
                    f"{side[0]}×{side[1]} from {cell_shape[1]}×{cell_shape[2]} cells; a model whose pooling resizes small maps to "
                    f"{self.window}×{self.window} cannot be slid: use DiFull/DiPart, or a StagedModel with a pooling grid_head"
                )

    def _probe_side(self, cell_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> tuple[int, int]:
        """The final features' ``(h, w)`` for one zero cell of ``cell_shape``: the probe forward, cached per
        (cell shape, device, dtype) and re-run when the stages' or cell head's parameters change (a one-target
        Grad call is a handful of passes; a probe on every call was 12.6 % of one)."""
        modules = [m for _, m in self.stages if isinstance(m, nn.Module)] + [self.cell_head]
        weights = _weights_key(modules)
        key = (cell_shape, str(device), dtype)
        cache: dict = self.__dict__.setdefault("_probes", {})
        hit = cache.get(key)
        if hit is not None and _same_weights(hit[0], weights):
            return hit[1]
        probe = torch.zeros((1, *cell_shape), device=device, dtype=dtype)
        with torch.no_grad():
            try:
                features = self.run(probe)
                self.cell_head(features)
            except Exception as err:
                raise ValueError(
                    f"expected {self.architecture} to accept {cell_shape[0]}-channel {cell_shape[1]}×{cell_shape[2]} cells, "
                    f"got {type(err).__name__}: {_first_line(err)}"
                ) from None
        side = (int(features.shape[-2]), int(features.shape[-1]))
        cache[key] = (weights, side)
        return side


def _weights_key(modules: Sequence[nn.Module]) -> tuple:
    """What a probe's outcome depends on besides the cell shape: every parameter and buffer, by identity, storage
    and version (a replaced module, parameter or ``.data`` changes one of them; the tensors are held, so an id
    is never reused while a cache entry lives)."""
    return tuple((t, t.data_ptr(), t._version, tuple(t.shape)) for m in modules for t in (*m.parameters(), *m.buffers()))


def _same_weights(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x[0] is y[0] and x[1:] == y[1:] for x, y in zip(a, b))


def _check_close(architecture: str, what: str, got: Tensor, expected: Tensor, rtol: float) -> None:
    if got.shape != expected.shape:
        raise ValueError(f"expected the {what} of {architecture} to give logits of shape {tuple(expected.shape)}, got {tuple(got.shape)}")
    scale = max(float(expected.abs().max()), 1.0)
    diff = float((got.double() - expected.double()).abs().max())
    if not diff <= rtol * scale:
        raise ValueError(
            f"expected the {what} of {architecture} to reproduce the model's logits, got a largest difference of "
            f"{diff:.3g} (scale {scale:.3g}); pass a factory returning an attreval.StagedModel"
        )


class Lambda(nn.Module):
    """A function as a module (for hand-built :class:`StagedModel` heads): ``Lambda(fn)(x) = fn(x)``.

    Modules the function closes over are not seen by module hooks unless passed as ``modules``.
    """

    def __init__(self, fn, *modules: nn.Module):
        super().__init__()
        self.fn = fn
        self.inner = nn.ModuleList(modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class StagedModule(nn.Module):
    """A :class:`StagedModel` as an ``nn.Module``: ``forward(x) = cell_head(stages(x))`` (one image's logits).

    Lets a hand-built split travel where a model is expected (the CLI, ``.to(device)``, confident-image
    selection); :func:`~attreval.models.splitters.split_model` returns the StagedModel inside unchanged.
    """

    def __init__(self, staged: StagedModel):
        super().__init__()
        self.staged = staged
        self.stage_modules = nn.ModuleList(m for _, m in staged.stages if isinstance(m, nn.Module))
        self.cell_head = staged.cell_head
        self.grid_head = staged.grid_head
        self.part_head = staged.part_head

    def forward(self, x: Tensor) -> Tensor:
        return self.staged.cell_head(self.staged.run(x))
