"""Checkpoints: each finished run's model, kept beside the results store as a safetensors file, and rebuilt from it.

`results/checkpoints/<run id>.safetensors` holds the run's restored best weights (a trained model: the state early
stopping restored, the one test was read from) or what a fitted model fitted (MostPop's popularity, EASE's and
ItemKNN's item x item matrix): the model's `state_dict`, tensors only. Safetensors, never pickle: loading reads
tensors and a string header, and runs no code. The header (safetensors metadata) also holds what rebuilding needs:
the run's id, its stored configuration (`ExperimentConfig.run_record`) and the data's checksum. A model is rebuilt
by building its plugin on the data's feature spec with the recorded options, then loading the tensors; a fitted
model that scores from the data (EASE, ItemKNN read x_u from `data.known`) is given the data it was loaded with.

A file is written whole or not at all (`bench.results.store.write_atomic`), after the run is recorded finished; a
checkpoint that cannot be written (a full disk; too little memory for the serialised copy safetensors makes, two
transient copies of the tensors) is a warning, never a failed run.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FOLDER = "checkpoints"
FORMAT = "deepfm-bench checkpoint 1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or does not fit the model or data: one line naming the file."""


class CheckpointWarning(UserWarning):
    """A finished run whose checkpoint could not be written (the run itself stays recorded)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: its tensors (aliases resolved) and its header."""

    path: Path
    tensors: dict[str, torch.Tensor]
    run_id: int
    config: dict[str, Any]
    data_checksum: str | None


def checkpoint_path(results_dir: str | Path, run_id: int) -> Path:
    """Where run `run_id`'s checkpoint lives under a results folder."""
    return Path(results_dir) / FOLDER / f"{run_id}.safetensors"


EXTRA = 'pip install "deepfm-bench[checkpoints]"'


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise CheckpointError(f"checkpoints need the safetensors package: {EXTRA}") from None
    return safetensors.torch


def _tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state_dict as CPU tensors safetensors can write, and its aliases: a tensor the state_dict names twice
    (one table shared by two fields) is written once, its other names recorded as aliases of the first."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[tuple] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()), tensor.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        out = tensor.detach().to("cpu").contiguous()
        if storage in storages:
            out = out.clone()  # part of a storage another tensor also uses: safetensors wants each its own
        storages.add(storage)
        tensors[name] = out
    return tensors, aliases


def save_checkpoint(model: torch.nn.Module, path: str | Path, *, run_id: int, config: dict[str, Any],
                    data_checksum: str | None) -> Path:
    """Write `model`'s tensors and the header rebuilding needs to `path`, whole or not at all."""
    from bench.results.store import write_atomic

    tensors, aliases = _tensors(model)
    header = {"format": FORMAT, "run": str(run_id), "config": json.dumps(config, default=str),
              "data_checksum": data_checksum or "", "aliases": json.dumps(aliases)}
    return write_atomic(path, _safetensors().save(tensors, metadata=header))


def keep_checkpoint(model: torch.nn.Module, results_dir: str | Path, run_id: int, config: dict[str, Any],
                    data_checksum: str | None) -> Path | None:
    """The runner's call once a run is recorded finished: its checkpoint written, or a CheckpointWarning saying why
    not (the run stays finished; `bench recommend` then says it has no checkpoint)."""
    try:
        return save_checkpoint(model, checkpoint_path(results_dir, run_id), run_id=run_id, config=config,
                               data_checksum=data_checksum)
    except Exception as exc:  # noqa: BLE001 - a full disk, too little memory: the finished run must stay finished
        warnings.warn(f"run {run_id}: no checkpoint kept ({type(exc).__name__}: {exc})", CheckpointWarning,
                      stacklevel=2)
        return None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint read with safetensors (tensors and a string header; nothing is unpickled or run), or a
    CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    _safetensors()
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as opened:
            header = opened.metadata() or {}
            tensors = {name: opened.get_tensor(name) for name in opened.keys()}  # noqa: SIM118 - not a dict
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in safetensors' own ways
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({type(exc).__name__}: "
                              f"{str(exc)[:120]})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a deepfm-bench checkpoint (its header's format is "
                              f"{header.get('format')!r}, expected {FORMAT!r})")
    try:
        config, aliases, run_id = json.loads(header["config"]), json.loads(header["aliases"]), int(header["run"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: its header is damaged ({type(exc).__name__}: {exc})") from None
    missing = sorted(set(aliases.values()) - set(tensors))
    if missing:
        raise CheckpointError(f"{path}: aliases name tensors the file does not hold: {missing[:3]}")
    tensors.update({alias: tensors[name] for alias, name in aliases.items()})
    return Checkpoint(path, tensors, run_id, config, header.get("data_checksum") or None)


def _take_saved_shapes(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """An unfitted model's empty buffers (a fitted model's, before `fit`) take the saved tensors' shapes, so that
    load_state_dict can copy into them."""
    for name, buffer in list(model.named_buffers()):
        saved = tensors.get(name)
        if saved is not None and buffer.numel() == 0 and saved.shape != buffer.shape:
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, leaf, buffer.new_empty(saved.shape))


def restore_model(checkpoint: Checkpoint, plugin: str, embed_dim: int, params: dict[str, Any], data: Any) -> Any:
    """The checkpoint's model: the plugin built on `data`'s feature spec with the recorded options, its tensors
    loaded exactly (every name, every shape), in eval mode on the CPU; a fitted model scoring from the data gets
    `data`."""
    from bench.nn.model import create_model

    model = create_model(plugin, data.spec, embed_dim, **params)
    _take_saved_shapes(model, checkpoint.tensors)
    try:
        model.load_state_dict(checkpoint.tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{checkpoint.path}: does not fit model {plugin} built on this data "
                              f"({' '.join(line.strip() for line in first[:3])[:240]})") from None
    if not getattr(model, "trainable", True) and hasattr(model, "data"):
        model.data = data
    return model.eval()
