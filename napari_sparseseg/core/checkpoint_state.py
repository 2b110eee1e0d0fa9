"""A checkpoint's training state checked against the net it declares, before any net is built from it.

A model file or a session store's checkpoint says how large its net is (``config.model`` and
``state["model_config"]``: channels, depth) and holds the net's tensors. Building the net the settings declare
before comparing them with the tensors would let a file of a few kilobytes declaring a net of a billion channels
take all the memory of the machine (napari with it). So the net is first built on PyTorch's ``meta`` device (shapes
without storage) and every tensor of the state compared with it: the weights and their moving average (name, shape,
floating point), the optimiser's per-parameter moments (shape) and settings (of the types a fresh AdamW
holds), the planned spacing, the step and the seconds trained; entries the state does not hold are refused. What
passes allocates no more than the declared net, itself bounded (:mod:`.limits`), and loads without a
``RuntimeError``, ``AttributeError`` or ``IndexError`` later (all found by mutating a real checkpoint field by field:
``tests/test_checkpoint_state.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import torch

from .config import ModelConfig, SessionConfig
from .limits import MAX_CLASSES
from .net import UNet3D
from .typed_fields import check_fields, is_int, is_number
from .weights import WEIGHT_DECAY

#: Fields of the state's model settings that must equal the session settings' (the layout of the net).
LAYOUT_FIELDS = ("base_channels", "depth", "max_channels", "anisotropy_threshold")


#: The entries a checkpoint's state may hold (:meth:`~.trainer.Trainer.state_dict`).
STATE_KEYS = frozenset({"model", "ema", "optimizer", "model_config", "spacing", "step", "elapsed"})


def _fail(message: str) -> NoReturn:
    """Refuse the checkpoint, saying why."""
    raise ValueError(message)


def _same_type(value: Any, fresh: Any) -> bool:
    """Whether an optimiser setting read from a file is of the type a fresh optimiser's is."""
    if fresh is None:  # a choice torch makes when it is not given (``foreach``, ``fused``)
        return value is None or isinstance(value, bool)
    if isinstance(fresh, bool):
        return isinstance(value, bool)
    if isinstance(fresh, (int, float)):
        return is_number(value)
    if isinstance(fresh, (tuple, list)):
        return (isinstance(value, (tuple, list)) and len(value) == len(fresh)
                and all(_same_type(v, f) for v, f in zip(value, fresh)))
    return isinstance(value, type(fresh))


def _fits(tensor: Any, want: tuple[int, ...], exact: bool) -> bool:
    """Whether ``tensor`` is a floating-point tensor of shape ``want`` (not ``exact``: its rank and first two sizes,
    the channels, for a file that does not say the spacing its kernels were planned for)."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        return False
    shape = tuple(tensor.shape)
    return shape == want if exact else (len(shape), shape[:2]) == (len(want), want[:2])


def _check_weights(name: str, weights: Any, expected: Mapping[str, torch.Size], exact: bool) -> None:
    """``weights``: a state dict of the expected names and shapes (:func:`_fits`; ``decision_offset`` optional)."""
    if not isinstance(weights, dict) or not all(isinstance(k, str) for k in weights):
        _fail(f"the checkpoint's {name} is not a mapping of named tensors")
    missing = sorted(set(expected) - set(weights) - {"decision_offset"})
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        _fail(f"the checkpoint's {name} does not fit its declared net (missing {missing[:3]}, unknown {extra[:3]})")
    for key, tensor in weights.items():
        want = tuple(expected[key])
        if not _fits(tensor, want, exact):
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            _fail(f"the checkpoint's {name} entry {key!r} is {shape}, its declared net has a floating-point "
                  f"{want}")


def _check_optimizer(state: Any, net: UNet3D, exact: bool) -> None:
    """An AdamW state of ``net``'s parameters: one group of its settings' types, moments of each parameter's shape."""
    params = list(net.parameters())
    fresh = torch.optim.AdamW(params, weight_decay=WEIGHT_DECAY).state_dict()["param_groups"][0]
    groups = state.get("param_groups") if isinstance(state, dict) else None
    moments = state.get("state") if isinstance(state, dict) else None
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict) \
            or not isinstance(moments, dict):
        _fail("the checkpoint's optimiser state is malformed (one group of settings and a state per parameter "
              "expected)")
    group = groups[0]
    if not {"lr", "betas", "eps", "weight_decay"} <= set(group):
        _fail("the checkpoint's optimiser settings are incomplete (lr, betas, eps, weight_decay expected)")
    listed = group.get("params")
    if not (isinstance(listed, list) and all(type(i) is int for i in listed) and listed == list(range(len(params)))):
        _fail("the checkpoint's optimiser state does not list its net's parameters")
    for key, value in group.items():
        if key != "params" and key in fresh and not _same_type(value, fresh[key]):
            _fail(f"the checkpoint's optimiser setting {key!r} is malformed")
        if key in fresh and (isinstance(fresh[key], bool) or fresh[key] is None) and value != fresh[key]:
            _fail(f"the checkpoint's optimiser setting {key!r} is {value!r}: this package's optimiser never is")
    betas, eps = group.get("betas", fresh["betas"]), group.get("eps", fresh["eps"])
    if not (all(0 <= b < 1 for b in betas) and eps > 0 and group.get("lr", 0) >= 0
            and group.get("weight_decay", 0) >= 0):
        _fail("the checkpoint's optimiser settings are out of range (betas in [0, 1), eps > 0, rates >= 0)")
    for index, entry in moments.items():
        if not (isinstance(index, int) and 0 <= index < len(params)) or not isinstance(entry, dict):
            _fail("the checkpoint's optimiser state is malformed (a state per parameter index expected)")
        if entry and not {"step", "exp_avg", "exp_avg_sq"} <= set(entry):
            _fail(f"the checkpoint's optimiser state of parameter {index} is incomplete")
        for key, value in entry.items():
            step = key == "step"  # finite: the reader checks every tensor of the state once this passes
            if not _fits(value, () if step else tuple(params[index].shape), exact or step):
                _fail(f"the checkpoint's optimiser state {key!r} of parameter {index} does not fit it")


def check_state(payload: dict[str, Any], config: SessionConfig) -> None:
    """Check a checkpoint's ``state`` against the net its settings declare, building nothing but shapes.

    Parameters
    ----------
    payload : dict
        A checkpoint (see :mod:`.checkpoint`) whose ``num_classes`` and ``in_channels`` are already checked.
    config : SessionConfig
        Its settings, read.

    Raises
    ------
    ValueError
        Naming the first entry that does not fit.
    """
    state = payload["state"]
    unknown = sorted(map(str, set(state) - STATE_KEYS))
    if unknown:
        _fail(f"the checkpoint's state holds unknown entries {unknown[:3]}")
    layout = state["model_config"]
    unknown = sorted(map(str, set(layout) - set(ModelConfig.__dataclass_fields__)))
    if unknown:
        _fail(f"the checkpoint's net settings hold unknown keys {unknown[:3]}")
    check_fields(ModelConfig, layout)
    model = ModelConfig(**layout)
    if any(getattr(model, f) != getattr(config.model, f) for f in LAYOUT_FIELDS):
        _fail("the checkpoint's net settings disagree with its settings (channels, depth)")
    # the head may have fewer classes than the file declares: a class added since the last step grows it at the next
    if model.num_classes > MAX_CLASSES + 1 or model.in_channels != payload["in_channels"]:
        _fail("the checkpoint's net settings disagree with its class or channel count")
    spacing = state.get("spacing", (1.0, 1.0, 1.0))
    if not (isinstance(spacing, (list, tuple)) and len(spacing) == 3 and all(is_number(s) and s > 0
                                                                              for s in spacing)):
        _fail("the checkpoint's planned spacing must be 3 positive numbers")
    step, elapsed = state.get("step", 0), state.get("elapsed", 0.0)
    if not (is_int(step) and step >= 0 and is_number(elapsed)
            and elapsed >= 0):
        _fail("the checkpoint's step and seconds trained must be a count and a number of seconds")
    with torch.device("meta"):
        net = UNet3D(model, spacing)
    expected = {k: v.shape for k, v in net.state_dict().items()}
    exact = "spacing" in state
    _check_weights("weights", state["model"], expected, exact)
    if "ema" in state:
        _check_weights("averaged weights", state["ema"], expected, exact)
    if "optimizer" in state:
        _check_optimizer(state["optimizer"], net, exact)
