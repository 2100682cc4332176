"""A user's own classifier seen through the interface of bench's backbones (methods/core/backbones.py), so that every
method that only reads a trained classifier (post-hoc scorers, MC-dropout, trust score, ConfidNet's head, an
ensemble of models) runs on it unchanged.

Contract: ``model`` maps images in [0, 1], shape (N, C, H, W), to logits (N, K). Penultimate features, for the
methods that read them (``needs_features``), come from, in this order:

1. ``feature_layer="NAME"``: the output of that submodule (a forward hook), flattened to (N, F). One forward pass
   gives the features and the logits together, so ``forward_head`` accepts only the features of the pass just made
   (all that trust score and ConfidNet ask of it).
2. timm's convention: ``forward_features`` + ``forward_head(x, pre_logits=True)`` + ``get_classifier()``.
3. bench's convention: ``forward_features(x) -> (N, F)`` + ``forward_head(f)`` (and ``head_dropout`` /
   ``forward_classifier`` where present, e.g. a bench backbone exported with TorchScript).

Otherwise the model has no features and those methods are refused by name. A feature source is kept only if
``forward_head(forward_features(x))`` gives ``model(x)`` on a probe batch.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from bench.errors import UsageError
from bench.methods.core.base import FitContext
from bench.methods.core.training import TrainLog

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
FEATURE_FIX = "pass feature_layer='NAME' (CLI --feature-layer NAME), the submodule whose output is the features"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


class UserModel(nn.Module):
    """The adapter: ``forward`` is the user's model; ``forward_features``, ``head_dropout``,
    ``forward_classifier``, ``forward_head`` and ``num_features`` as a bench backbone has them."""

    def __init__(self, model: nn.Module, name: str, feature_layer: str | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise UsageError(f"model {name} is a {type(model).__name__}, not a torch.nn.Module; pass the module "
                             "(or a TorchScript / torch.export file to bench run --model)")
        meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None)
        if meta is not None:  # moving it to a device would raise deep inside torch ("Cannot copy out of meta tensor")
            raise UsageError(f"model {name} has tensors on the meta device ({meta}: a shape without values); "
                             "materialise it first (model.to_empty(device=...) and load_state_dict)")
        self.model = model
        self.name = name
        self.key = f"user:{name}"  # the model's identity within a run: shared logits and attacked sets
        self.num_classes = 0
        self.num_features = 0
        self.source = ""  # layer | timm | bench | "" (none)
        self.feature_problem = ""  # why there are no features (one line), "" when there are
        self._hook = None
        self._capture = False
        self._captured: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._fixed = _fix_modes(model)
        self.stochastic_tail, self._tail_at = _stochastic_tail(model)  # MC-dropout's cost floor (methods/mcdropout.py)
        if feature_layer:
            names = [n for n, _ in model.named_modules() if n]
            if feature_layer not in names:
                close = difflib.get_close_matches(feature_layer, names, n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise UsageError(f"feature_layer={feature_layer!r} is not a submodule of model {name}; {hint}"
                                 f"its submodules: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
            self._hook = model.get_submodule(feature_layer).register_forward_hook(self._on_output)
            self.source = "layer"
        elif callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None)):
            self.source = "timm" if _takes_pre_logits(model) and callable(getattr(model, "get_classifier", None)) \
                else "bench"
        else:
            self.feature_problem = (f"model {name} has neither forward_features + forward_head (timm's convention) "
                                    f"nor a feature_layer; {FEATURE_FIX}")

    def content_hash(self) -> str:
        """sha256 of what the model computes with: its class, TorchScript code where it has some, and every
        parameter and buffer (name, dtype, shape, bytes). ``--resume`` of a run compares it, so that another model
        saved under the same name never adds its cells to the old model's."""
        h = hashlib.sha256()
        h.update(type(self.model).__qualname__.encode())
        with contextlib.suppress(Exception):  # TorchScript's code; other modules have none
            h.update(str(self.model.code).encode())
        with torch.no_grad():
            for key, t in sorted(self.model.state_dict().items()):
                h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
                flat = t.detach().to("cpu").contiguous().reshape(-1)  # a 0-d tensor cannot be viewed as bytes
                h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        return h.hexdigest()

    # --- the backbone interface ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The layers before the first dropout (deterministic), where a stochastic tail was found or declared."""
        if self._tail_at:
            return self.model[: self._tail_at](x)
        return self.model.forward_prefix(x)

    def forward_tail(self, h: torch.Tensor) -> torch.Tensor:
        if self._tail_at:
            return self.model[self._tail_at:](h)
        return self.model.forward_tail(h)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_problem:
            raise UsageError(self.feature_problem)
        if self.source == "layer":
            self._capture, self._captured = True, None
            try:
                logits = self.model(x)
            finally:
                self._capture = False
            if self._captured is None:
                raise UsageError(f"feature_layer of model {self.name} did not run in the forward pass; name a "
                                 "submodule that model(x) calls")
            f = self._captured.flatten(1)
            self._captured = None
            self._last = (f, logits)
            return f
        if self.source == "timm":
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True).flatten(1)
        return self.model.forward_features(x)

    def head_dropout(self, f: torch.Tensor) -> torch.Tensor:
        if self.source == "bench" and callable(getattr(self.model, "head_dropout", None)) \
                and callable(getattr(self.model, "forward_classifier", None)):
            return self.model.head_dropout(f)
        return f  # timm applies its head dropout inside pre_logits; a hooked layer's output is what the rest sees

    def forward_classifier(self, d: torch.Tensor) -> torch.Tensor:
        if self.source == "layer":
            if self._last is None or d is not self._last[0]:
                raise UsageError(f"model {self.name}: with feature_layer, forward_head maps only the features of the "
                                 "forward pass just made (the hook gives features and logits together)")
            return self._last[1]
        if self.source == "timm":
            return self.model.get_classifier()(d)
        if callable(getattr(self.model, "forward_classifier", None)) and callable(
                getattr(self.model, "head_dropout", None)):
            return self.model.forward_classifier(d)
        return self.model.forward_head(d)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.forward_classifier(self.head_dropout(f))

    def _on_output(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._capture:
            if not isinstance(output, torch.Tensor):
                raise UsageError(f"feature_layer of model {self.name} returns a {type(output).__name__}, not a "
                                 "tensor; name a submodule that returns one")
            self._captured = output

    def close(self) -> None:
        """Remove the hook from the user's module (bench leaves the model as it found it)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._last = None
        for m, saved in self._fixed:
            for attr in ("train", "eval"):
                if attr in saved:
                    setattr(m, attr, saved[attr])
                else:
                    m.__dict__.pop(attr, None)
        self._fixed = []

    # --- the checks, on a probe batch, before any expensive work ----------------------------------------------------
    def probe(self, x: torch.Tensor, num_classes: int, data: str = "mnist") -> None:
        """Run the model on a few images of the data (eval mode, no grad): logits (N, K), finite, K = the data's
        classes; then check the feature source reproduces the logits."""
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            self._probe(x, num_classes, data)
        finally:
            for m, mode in modes:
                m.training = mode

    def _probe(self, x: torch.Tensor, num_classes: int, data: str) -> None:
        shape = "(N, " + ", ".join(str(d) for d in x.shape[1:]) + ")"
        with torch.no_grad():
            try:
                out = self.model(x)
            except Exception as e:  # any failure here is the model not fitting the data's images
                chans = _first_in_channels(self.model)
                if chans is not None and chans != x.shape[1]:
                    raise UsageError(f"model {self.name} expects {chans}-channel images (its first layer has "
                                     f"in_channels={chans}) but {data} images are {shape}; build it for "
                                     f"{x.shape[1]} channel(s) or repeat the grey channel inside it "
                                     "(x.expand(-1, 3, -1, -1))") from None
                raise UsageError(f"model {self.name} fails on {data} images {shape} in [0, 1] ({_first_line(e)}); "
                                 "it must map such images to logits (N, K)") from None
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise UsageError(f"model {self.name} returns {got} for {len(x)} images; it must return logits of "
                                 "shape (N, K) (one row per image)")
            if out.is_complex() or not (out.is_floating_point() or out.dtype in _INT_DTYPES):
                raise UsageError(f"model {self.name} returns {out.dtype} logits; it must return real numbers (a float "
                                 "tensor)")
            if out.is_meta:
                raise UsageError(f"model {self.name} returns a tensor on the meta device (a shape without values)")
            if not torch.isfinite(out).all():
                raise UsageError(f"model {self.name} returns non-finite logits (nan or inf) on {data} images in "
                                 "[0, 1]; check its normalisation and weights")
            if out.shape[1] != num_classes:
                raise UsageError(f"model {self.name} returns {out.shape[1]} logits per image but {data} has "
                                 f"{num_classes} classes; its last layer must have {num_classes} outputs")
            self.num_classes = int(out.shape[1])
            self.input_shape = tuple(int(d) for d in x.shape[1:])  # what feature probes feed it
            if not self.feature_problem:
                self._check_features(x, out.float())

    def _check_features(self, x: torch.Tensor, logits: torch.Tensor) -> None:
        how = {"layer": "the feature_layer hook", "timm": "forward_head(forward_features(x), pre_logits=True)",
               "bench": "forward_features(x)"}[self.source]
        try:
            f = self.forward_features(x)
            again = self.forward_head(f).float()
        except UsageError:
            raise
        except Exception as e:  # a model whose forward_features/forward_head do not compose as documented
            self.feature_problem = f"model {self.name}: features from {how} fail ({_first_line(e)}); {FEATURE_FIX}"
            return
        finally:
            self._last = None
        if f.ndim != 2 or f.shape[0] != len(x):
            self.feature_problem = (f"model {self.name}: features from {how} have shape {tuple(f.shape)}, not "
                                    f"(N, F); {FEATURE_FIX}")
        elif again.shape != logits.shape or not torch.allclose(again, logits, rtol=1e-4, atol=1e-4):
            self.feature_problem = (f"model {self.name}: forward_head(forward_features(x)) differs from model(x), so "
                                    f"those are not its penultimate features; {FEATURE_FIX}")
        else:
            self.num_features = int(f.shape[1])


def _fix_modes(model: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    """A ``torch.export`` graph has its train/eval behaviour fixed at export time and raises on ``train()`` /
    ``eval()``; make those no-ops on it while bench holds the model (``close`` puts the originals back)."""
    fixed = []
    for m in model.modules():
        if "train" not in vars(m):
            continue
        try:
            m.train(m.training)
        except NotImplementedError:
            fixed.append((m, {k: vars(m)[k] for k in ("train", "eval") if k in vars(m)}))
            m.train = types.MethodType(lambda self, mode=True: self, m)
            m.eval = types.MethodType(lambda self: self, m)
    return fixed


def _stochastic_tail(model: nn.Module) -> tuple[bool, int]:
    """(whether MC-dropout can run the layers before the first dropout once and only the rest T times, where the
    split is in an ``nn.Sequential``). Proven, not guessed: the model declares it (``stochastic_tail`` with
    ``forward_prefix``/``forward_tail``, as bench's backbones do), or it is an ``nn.Sequential`` whose layers before
    its first top-level dropout hold no dropout. Otherwise MC-dropout runs T full passes."""
    if getattr(model, "stochastic_tail", False) is True and callable(getattr(model, "forward_prefix", None)) \
            and callable(getattr(model, "forward_tail", None)):
        return True, 0
    if isinstance(model, nn.Sequential):
        for i, layer in enumerate(model):
            if isinstance(layer, nn.modules.dropout._DropoutNd):
                return i > 0, i
            if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in layer.modules()):
                return False, 0  # a dropout nested in a layer: no proven split
    return False, 0


def _takes_pre_logits(model: nn.Module) -> bool:
    try:
        return "pre_logits" in inspect.signature(model.forward_head).parameters
    except (TypeError, ValueError):  # TorchScript methods have no Python signature
        return False


def _first_in_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        chans = getattr(m, "in_channels", None)
        if isinstance(chans, int):
            return chans
    return None


def has_dropout(model: nn.Module) -> bool:
    """As MC-dropout finds them (a TorchScript model's dropouts are script modules, so it has none)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


@contextlib.contextmanager
def preserved(models: list[nn.Module]) -> Iterator[None]:
    """Leave the users' models as found: every module's train/eval mode, every parameter's ``requires_grad`` and the
    device they were on (methods may switch modes or freeze parameters while they fit; nothing is trained)."""
    saved = []
    for model in models:
        p = next(iter(model.parameters()), None)
        saved.append((model, [(m, m.training) for m in model.modules()],
                      [(q, q.requires_grad) for q in model.parameters()], p.device if p is not None else None))
    try:
        yield
    finally:
        for model, modes, grads, device in saved:
            for m, mode in modes:
                m.training = mode  # each module's own flag, without calling (possibly overridden) train()
            for q, flag in grads:
                q.requires_grad_(flag)
            if device is not None:
                model.to(device)


@dataclass
class UserFitContext(FitContext):
    """A fit context whose "baseline" is the user's model: ``train_baseline`` hands it over instead of training
    (an ensemble's member i, of seed base_seed + i, is the i-th model). Nothing is cached: the weights are the
    user's, bench has no key for them."""

    models: list[UserModel] = field(default_factory=list)
    base_seed: int = 0

    def train_baseline(self, backbone: str, num_classes: int, seed: int, train: Any, val: Any
                       ) -> tuple[nn.Module, TrainLog, str]:
        i = seed - self.base_seed if len(self.models) > 1 else 0
        if not 0 <= i < len(self.models):
            raise UsageError(f"the method asked for {i + 1} models; {len(self.models)} were given")
        model = self.models[i]
        return model, TrainLog(device=str(self.device)), model.key

    def fit_method(self, name: str, *args: Any, **kwargs: Any) -> Any:
        raise UsageError(f"a method here needs bench to train {name}; it cannot run on a model you bring")
