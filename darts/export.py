"""Self-describing exports of trained final networks, and the checks that a state dict fits a network.

An export (:func:`save`, :func:`load`) holds only plain data (dicts, lists, str, int, float, bool,
tensors), so ``torch.load(path, weights_only=True)`` reads it::

    {"format": "darts-model-export", "format_version": 2, "space": "darts", "network": "cifar",
     "class_name": "NetworkCIFAR", "config": {...}, "genotype": {...}, "state_dict": {...}}

The network class is found through the search-space registry (``space`` + ``network``), so a new
space's networks export and load with no change here (the recurrent space's ``ptb`` network:
``"space": "darts_rnn", "network": "ptb"``, its config the sizes and dropouts, its genotype
``{"recurrent": [...], "concat": [...]}``); ``class_name`` is kept for people reading the
file and for the exports of format version 1, which recorded only it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn

from darts.checkpoint import save_atomic
from darts.errors import DartsError
from darts.spaces import SPACES

# The value of the ``format`` key that marks a file as one of our exports, and the newest layout
# this code writes and reads. Version 1 named the network by its class alone.
EXPORT_FORMAT = "darts-model-export"
EXPORT_FORMAT_VERSION = 2
CLASS_ONLY_FORMAT_VERSION = 1
REQUIRED_KEYS = {
    CLASS_ONLY_FORMAT_VERSION: ("class_name", "config", "genotype", "state_dict"),
    EXPORT_FORMAT_VERSION: ("space", "network", "config", "genotype", "state_dict"),
}


# ---------------------------------------------------------------------------
# Parameter count
# ---------------------------------------------------------------------------
def count_parameters(model: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Number of parameters; by default without the auxiliary head, as papers report it.

    Any submodule named ``auxiliary_head`` (also inside wrappers such as DDP)
    is excluded when ``exclude_auxiliary`` is true. Shared parameters count once.
    """
    excluded: set[int] = set()
    if exclude_auxiliary:
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] == "auxiliary_head":
                excluded.update(id(p) for p in module.parameters())
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


# ---------------------------------------------------------------------------
# Compatibility of a state dict with a network
# ---------------------------------------------------------------------------
def _shape_text(value) -> str:
    shape = getattr(value, "shape", None)
    if shape is None:
        return f"a {type(value).__name__}, not a tensor"
    return "x".join(str(size) for size in shape) if len(shape) else "scalar"


def _describe(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if not config:
        return type(model).__name__
    settings = ", ".join(f"{key}={value}" for key, value in config.items())
    return f"{type(model).__name__}({settings})"


def check_compatible(model: nn.Module, state_dict, genotype=None, source: str = "checkpoint") -> None:
    """Raise :class:`DartsError` unless ``state_dict`` fits ``model`` key for key and shape for shape.

    ``genotype`` (a genotype or its ``to_dict()``), when the checkpoint records one, is compared
    with ``model.genotype`` too: genotypes that differ only in which inputs the edges read have
    identical keys and shapes. A dict is parsed by the model's own genotype class, so any space's
    genotypes work. ``source`` names the file or object in the message.
    """
    if not isinstance(state_dict, Mapping):
        raise DartsError(f"{source} holds no state dict: got {type(state_dict).__name__}")

    if genotype is not None and hasattr(model, "genotype"):
        if isinstance(genotype, Mapping):
            try:
                genotype = type(model.genotype).from_dict(genotype)
            except DartsError as err:
                raise DartsError(f"{source} records an invalid genotype: {err}") from None
        if genotype != model.genotype:
            raise DartsError(f"{source} was made for a different genotype: {source} has {genotype}, "
                             f"this network has {model.genotype}")

    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    first_mismatch = None
    for key, tensor in expected.items():
        if key in state_dict:
            found = state_dict[key]
            if not isinstance(found, torch.Tensor) or tuple(found.shape) != tuple(tensor.shape):
                first_mismatch = (key, _shape_text(found), _shape_text(tensor))
                break
    if not (missing or unexpected or first_mismatch):
        return

    parts = [f"{len(missing)} missing keys", f"{len(unexpected)} unexpected"]
    if first_mismatch:
        key, found_shape, expected_shape = first_mismatch
        parts.append(f"first shape mismatch {key} ({found_shape} in the {source} vs {expected_shape} "
                     "in this network)")
    message = f"{source} was made for a different network: " + ", ".join(parts)
    examples = []
    if missing:
        examples.append(f"first missing key {missing[0]}")
    if unexpected:
        examples.append(f"first unexpected key {unexpected[0]}")
    if examples:
        message += "; " + ", ".join(examples)
    message += f"; this network is {_describe(model)}"
    if unexpected and all(str(key).startswith("module.") for key in state_dict):
        message += " (the keys start with 'module.': it was saved from a DataParallel/DDP wrapper)"
    raise DartsError(message)


# ---------------------------------------------------------------------------
# Which registered network a model or an export is
# ---------------------------------------------------------------------------
def _exportable_class_names() -> list[str]:
    return [network.__name__ for _, space in SPACES.items() for network in space.networks.values()]


def network_identity(model: nn.Module) -> tuple[str, str]:
    """(space name, network name) of a registered final network; found by the model's exact class,
    so a subclass or a wrapper (DDP, torch.compile) is refused rather than exported as its base."""
    for space_name, space in SPACES.items():
        for network_name, network_class in space.networks.items():
            if type(model) is network_class:
                return space_name, network_name
    raise DartsError(f"cannot export a {type(model).__name__}: only {', '.join(_exportable_class_names())} "
                     "can be exported")


def _space_and_class(payload: Mapping, version: int, path: str):
    """The space class and network class an export names (by space + network, or, in a version 1
    export, by class name alone), or a DartsError listing the valid choices."""
    if version == CLASS_ONLY_FORMAT_VERSION:
        class_name = payload["class_name"]
        for _, space in SPACES.items():
            for network_class in space.networks.values():
                if network_class.__name__ == class_name:
                    return space, network_class
        raise DartsError(f"model export {path} names an unknown network class {class_name!r}; "
                         f"known: {', '.join(_exportable_class_names())}")
    space_name, network_name = payload["space"], payload["network"]
    if not isinstance(space_name, str) or space_name not in SPACES:
        raise DartsError(f"model export {path} names an unknown search space {space_name!r}; "
                         f"valid choices: {', '.join(SPACES.names())}")
    space = SPACES.get(space_name)
    if not isinstance(network_name, str) or network_name not in space.networks:
        raise DartsError(f"model export {path} names an unknown network {network_name!r} of the "
                         f"{space_name} space; valid choices: {', '.join(space.networks)}")
    return space, space.networks[network_name]


# ---------------------------------------------------------------------------
# Export / load
# ---------------------------------------------------------------------------
def save(model: nn.Module, path) -> None:
    """Write ``model`` to ``path`` atomically as a self-describing export.

    Through :func:`darts.checkpoint.save_atomic`: a crash never leaves a half-written export under
    ``path`` nor replaces the one already there. Parent directories are created; an unwritable
    place is a DartsError naming ``path``.
    """
    space_name, network_name = network_identity(model)
    payload = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "space": space_name,
        "network": network_name,
        "class_name": type(model).__name__,
        "config": dict(model.config),
        "genotype": model.genotype.to_dict(),
        # CPU tensors: the export loads on machines without the training device.
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }
    # An export is shared with other people and tools, unlike a checkpoint: the umask's permissions.
    save_atomic(payload, path, what="model export", umask_permissions=True)


def _load_error_detail(err: BaseException, limit: int = 200) -> str:
    """The informative part of a torch.load error, on one short line.

    weights_only failures open with a long generic paragraph about PyTorch 2.6
    defaults; the real cause follows "WeightsUnpickler error:".
    """
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.split(" Please use", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0][:limit] if lines else ""
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def _read_payload(path: str, map_location) -> Mapping:
    """The export's dict, checked for the format marker and a version this code reads."""
    if not os.path.exists(path):
        raise DartsError(f"model export {path} does not exist")
    if os.path.isdir(path):
        raise DartsError(f"model export {path} is a directory, not a file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError as err:
        raise DartsError(f"cannot read model export {path}: {err.strerror or err}") from None
    # A bad file surfaces as many types: UnpicklingError, RuntimeError, EOFError,
    # zipfile errors, even OSError(EINVAL) from torch's zip reader on a truncated file.
    except Exception as err:  # noqa: BLE001
        raise DartsError(f"cannot load model export {path}: the file is corrupt, truncated or not a "
                         f"plain-data torch file ({_load_error_detail(err)})") from None

    if not isinstance(payload, Mapping) or payload.get("format") != EXPORT_FORMAT:
        found = (f"keys: {', '.join(map(str, list(payload)[:8]))}" if isinstance(payload, Mapping)
                 else f"a {type(payload).__name__}")
        raise DartsError(f"{path} is not a darts model export (no format marker {EXPORT_FORMAT!r}; "
                         f"found {found}); export a trained network with darts.export.save")
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DartsError(f"model export {path} has an invalid format_version {version!r}")
    if version > EXPORT_FORMAT_VERSION:
        raise DartsError(f"model export {path} has format version {version}, newer than this code reads "
                         f"(up to {EXPORT_FORMAT_VERSION}); update darts")
    missing = [key for key in REQUIRED_KEYS[version] if key not in payload]
    if missing:
        raise DartsError(f"model export {path} is incomplete: it lacks {', '.join(missing)}")
    return payload


def load(path, map_location="cpu") -> nn.Module:
    """Rebuild an exported network from ``path`` alone, in eval mode.

    Needs no training config: the space, the network class, its constructor arguments and the
    genotype come from the file. When ``map_location`` is a device (str or ``torch.device``) the
    network is moved there. Every failure (missing, unreadable, corrupt or truncated file, a file
    that is not a model export, an unknown network, weights that do not fit) raises
    :class:`DartsError` naming ``path``.
    """
    path = os.fspath(path)
    payload = _read_payload(path, map_location)
    space, network_class = _space_and_class(payload, payload["format_version"], path)
    config = payload["config"]
    if not isinstance(config, Mapping):
        raise DartsError(f"model export {path} has a malformed config: {type(config).__name__}")
    try:
        genotype = space.genotype_class.from_dict(payload["genotype"])
    except DartsError as err:
        raise DartsError(f"model export {path} holds an invalid genotype: {err}") from None
    try:
        model = network_class(genotype=genotype, **config)
    except TypeError as err:
        raise DartsError(f"model export {path} has a config that does not fit "
                         f"{network_class.__name__}: {err}") from None
    except DartsError as err:
        raise DartsError(f"model export {path}: {err}") from None

    check_compatible(model, payload["state_dict"], source=f"model export {path}")
    model.load_state_dict(payload["state_dict"])
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval()
