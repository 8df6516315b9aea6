"""Each ``_target_`` node of a run config, bound to its callable's signature (as torchtune does)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _target_nodes(node, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    if node._is_none() or node._is_missing():
        return
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            child = node._get_node(key)
            if not path and key == "hydra":
                continue
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _target_nodes(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, child in enumerate(node):
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _target_nodes(child, f"{path}[{index}]")


#: Where a target's ``**kwargs`` go when not to its base classes: their parameters are accepted too.
KWARGS_FORWARDED_TO = {
    "lightning.pytorch.loggers.TensorBoardLogger": "torch.utils.tensorboard.SummaryWriter",
    "lightning.pytorch.loggers.tensorboard.TensorBoardLogger": "torch.utils.tensorboard.SummaryWriter",
    "lightning.pytorch.loggers.WandbLogger": "wandb.init",
    "lightning.pytorch.loggers.wandb.WandbLogger": "wandb.init",
}


def _named_parameters(function) -> tuple[list[str], bool] | None:
    """The named parameters of ``function`` (``self`` excluded) and whether it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    named = [
        name for name, p in parameters.items()
        if name != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def accepted_keys(function, target: str) -> list[str] | None:
    """The config keys a ``_target_`` takes; ``None`` when it takes ``**kwargs`` that go somewhere
    this cannot tell. ``**kwargs`` are followed to :data:`KWARGS_FORWARDED_TO`, or, for a class, up
    its bases' ``__init__`` (``super().__init__(**kwargs)``) until one takes no ``**kwargs``;
    ``torch.nn.Module`` and ``object`` take none (they refuse any keyword)."""
    import torch

    found = _named_parameters(function)
    if found is None:
        return None
    names, open_ended = found
    if not open_ended:
        return names
    if target in KWARGS_FORWARDED_TO:
        forwarded = accepted_keys(get_object(KWARGS_FORWARDED_TO[target]), KWARGS_FORWARDED_TO[target])
        return None if forwarded is None else [*names, *(n for n in forwarded if n not in names)]
    if not isinstance(function, type):
        return None
    for base in function.__mro__[1:]:
        if base in (object, torch.nn.Module):
            return names
        if "__init__" not in vars(base):
            continue
        found = _named_parameters(base.__init__)
        if found is None:
            return None
        names += [name for name in found[0] if name not in names]
        if not found[1]:
            return names
    return names


def target_problems(cfg: DictConfig) -> dict[str, list[str]]:
    """Problems of each ``_target_`` node, by the node's path (``loss.terms.kd``): the target must
    import, and each key of the node must be one of its parameters."""
    problems: dict[str, list[str]] = {}
    for path, node in _target_nodes(cfg):
        found = problems.setdefault(path, [])
        target = node._get_node("_target_")._value()
        try:
            function = get_object(target)
        except Exception as error:  # noqa: BLE001 - report any import failure as a config problem
            found.append(f"{path}._target_={target!r} cannot be imported: {error}")
            continue
        parameters = accepted_keys(function, target)
        if parameters is None:
            continue  # **kwargs whose destination is unknown: not checked (docs/configuration.md)
        for key in node.keys():
            if key in HYDRA_KEYS or key in parameters:
                continue
            close = difflib.get_close_matches(str(key), list(parameters), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            found.append(f"{path}.{key}: unknown option for {target}{hint} (valid: {', '.join(parameters)})")
    return {path: found for path, found in problems.items() if found}


def check_targets(cfg: DictConfig) -> list[str]:
    """Every problem of :func:`target_problems`, in config order."""
    return [problem for found in target_problems(cfg).values() for problem in found]


def broken(group: str, problems_by_node: dict[str, list[str]]) -> bool:
    """Whether ``group`` (``loss``) or a node inside it (``loss.terms.kd``) has a target problem:
    building it would only fail again with a ``TypeError``."""
    return any(path == group or path.startswith(f"{group}.") or path.startswith(f"{group}[") for path in problems_by_node)
