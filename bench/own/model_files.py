"""Loading a user's model for ``bench run --model SPEC``: a TorchScript file (``torch.jit.save``), a ``torch.export``
archive (``torch.export.save``), or Python code ``file.py:Class`` / ``package.module:factory`` called without
arguments, with ``--weights FILE`` (a state dict) loaded into it. Every failure is a one-line UsageError."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import pickle
import re
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.errors import UsageError

_PY_SPEC = re.compile(r"^(?P<where>.+\.py|[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_]\w*)$")


@dataclass(frozen=True)
class LoadedModel:
    module: nn.Module
    name: str  # default row name: the file's stem
    origin: str  # what was loaded, for the manifest


def _stem(path: Path) -> str:
    """A file's stem as a default model name, made safe as part of a file name (bench/run/store.py check_name)."""
    name = re.sub(r"[^A-Za-z0-9_.+=-]", "_", path.stem)[:120]
    return "_" + name[1:] if name[:1] in (".", "-", "") else name


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def _what(e: BaseException) -> str:
    """``Type: first line`` of an exception the user's code raised (SystemExit shows its exit code)."""
    if isinstance(e, SystemExit):
        return f"it calls sys.exit({e.code!r})"
    return f"{type(e).__name__}: {_first_line(e)}"


def is_python_spec(spec: str) -> bool:
    return _PY_SPEC.match(spec) is not None and not Path(spec).is_file()


def load_model(spec: str, weights: str | None = None) -> LoadedModel:
    if is_python_spec(spec):
        return _from_python(spec, weights)
    if weights:
        raise UsageError(f"--weights applies to file.py:Class or package.module:factory, not to {spec} (a saved "
                         "model file carries its weights)")
    return _from_file(Path(spec))


def _from_file(path: Path) -> LoadedModel:
    if not path.is_file():
        raise UsageError(f"--model {path} does not exist; give a TorchScript file, a torch.export archive, or "
                         "file.py:Class / package.module:factory with --weights")
    if not zipfile.is_zipfile(path):  # both formats are zip archives; anything else fails with noise in both loaders
        raise UsageError(f"--model {path} is not a TorchScript file or a torch.export archive (not a zip archive); "
                         "save it with torch.jit.save or torch.export.save, or give file.py:Class with --weights")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice, not the user's concern
            module = torch.jit.load(str(path), map_location="cpu")
        return LoadedModel(module, _stem(path), f"torchscript {path}")
    except Exception as e:  # not TorchScript: maybe an export archive
        script_error = _first_line(e)
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)  # the export loader logs a warning before it raises; we raise one line
    try:
        with _weights_only_loads():
            program = torch.export.load(str(path))
        module = program.module()
    except pickle.UnpicklingError:
        raise UsageError(f"--model {path} holds pickled Python objects beyond tensors, which bench never unpickles "
                         "(loading them could run code); export the model again with torch.export.save, or give "
                         "file.py:Class with --weights") from None
    except Exception as e:  # neither: say both
        raise UsageError(f"--model {path} loads neither as TorchScript ({script_error}) nor as a torch.export "
                         f"archive ({_first_line(e)}); save it with torch.jit.save or torch.export.save, or give "
                         "file.py:Class with --weights") from None
    finally:
        torch_log.setLevel(level)
    return LoadedModel(module, _stem(path), f"torch.export {path}")


@contextlib.contextmanager
def _weights_only_loads():
    """torch.export.load unpickles parts of an archive with ``weights_only=False`` (pickled weights and constants,
    and a fallback after a failed safe load), so a crafted .pt2 that a colleague shares would run code. For the
    duration of the load every ``torch.load`` is the safe unpickler: such a file fails to load instead."""
    original = torch.load

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = safe_load
    try:
        yield
    finally:
        torch.load = original


def _from_python(spec: str, weights: str | None) -> LoadedModel:
    m = _PY_SPEC.match(spec)
    assert m is not None
    where, attr = m.group("where"), m.group("attr")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"--model {spec}: {path} does not exist")
        name = f"_bench_user_model_{abs(hash(str(path.resolve())))}"
        try:
            mod_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except (Exception, SystemExit) as e:  # the user's file fails to import, or calls sys.exit / exit()
            sys.modules.pop(name, None)
            raise UsageError(f"--model {spec}: {path} fails to import ({_what(e)})") from None
    else:
        try:
            module = importlib.import_module(where)
        except (Exception, SystemExit) as e:  # not importable, or it exits
            raise UsageError(f"--model {spec}: module {where} does not import ({_what(e)}); is it on PYTHONPATH?") \
                from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
                       and v.__module__ == module.__name__)
        raise UsageError(f"--model {spec}: {where} has no class or factory {attr!r} (its nn.Module classes: "
                         f"{', '.join(found) or 'none'})")
    try:
        model = factory()
    except (Exception, SystemExit) as e:  # the constructor needs arguments, fails or exits
        raise UsageError(f"--model {spec}: {attr}() in {where} fails ({_what(e)}); it must build the model without "
                         "arguments (write a small factory function)") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {spec}: {attr}() returns a {type(model).__name__}, not an nn.Module")
    if weights:
        _load_weights(model, Path(weights), spec)
        return LoadedModel(model, _stem(Path(weights)), f"{spec} with weights {weights}")
    return LoadedModel(model, attr, f"{spec} (no --weights: its initial weights)")


def _load_weights(model: nn.Module, path: Path, spec: str) -> None:
    if not path.is_file():
        raise UsageError(f"--weights {path} does not exist")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or pickled objects beyond tensors
        raise UsageError(f"--weights {path} does not load as a state dict ({_first_line(e)}); save it with "
                         "torch.save(model.state_dict(), FILE)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common checkpoint layout {"state_dict": ..., ...}
    if not isinstance(state, dict):
        raise UsageError(f"--weights {path} holds a {type(state).__name__}, not a state dict; save "
                         "model.state_dict()")
    missing, unexpected = _mismatch(model, state)
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else []) + \
                ([f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"] if unexpected
                 else [])
        raise UsageError(f"--weights {path} does not fit {spec} ({'; '.join(parts)}); give the state dict of the "
                         "same class")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # same keys, other shapes
        shape = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), _first_line(e))
        raise UsageError(f"--weights {path} does not fit {spec} ({shape[:200]}); give the state dict of the same "
                         "class and size") from None


def _mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    given = set(state)
    return sorted(own - given), sorted(given - own)
