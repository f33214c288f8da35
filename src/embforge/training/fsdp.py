"""FSDP2 (``--fsdp``, ``--fsdp_config '{"version": 2}'``) for large backbones, on the Trainer's own FSDP path.

The Trainer and accelerate shard the model (``fully_shard``) and build the optimizer on the shards;
embforge adds three things they leave out for an Encoder:

- **CPU processes.** ``AcceleratorState.__init__`` (accelerate 1.15, ``accelerate/state.py`` lines 986-1016)
  only turns a given FSDP plugin into ``DistributedType.FSDP`` for GPU-like device types; for
  ``MULTI_CPU`` (gloo) it drops the plugin without a word, and the Trainer then trains with DDP
  (``Trainer.is_fsdp_enabled`` reads ``accelerator.state.fsdp_plugin``, transformers/trainer.py:875).
  FSDP2 runs on gloo, so :func:`restore_cpu_plugin` puts the plugin back as accelerate does for GPUs.
- **What to wrap.** accelerate reads the layer classes from the model's ``_no_split_modules``; the
  Encoder is not a PreTrainedModel, so without :func:`default_layer_classes` only the whole model would
  be one FSDP unit and every forward would gather all weights at once.
- **Saving.** :func:`full_state_dict` gathers the weights to rank 0 (on CPU) and :func:`materialized`
  lends them to the Encoder while it writes its usual folder, so the output is a plain, unsharded model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .distributed import is_distributed


def restore_cpu_plugin(accelerator: Any, plugin_args: dict[str, Any] | None) -> bool:
    """Make the accelerator shard with FSDP on CPU processes too; True when FSDP is on afterwards."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if plugin_args is None:
        return getattr(state, "fsdp_plugin", None) is not None
    if getattr(state, "fsdp_plugin", None) is None and state.distributed_type == DistributedType.MULTI_CPU:
        plugin = FullyShardedDataParallelPlugin(**plugin_args)
        if state.mixed_precision != "no":  # as AcceleratorState does for GPUs
            plugin.set_mixed_precision(state.mixed_precision)
        state.fsdp_plugin = plugin
        state.distributed_type = DistributedType.FSDP
        # As AcceleratorState.__init__ ends: every later AcceleratorState() copies PartialState's type back.
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return getattr(state, "fsdp_plugin", None) is not None


def default_layer_classes(plugin: Any, model: nn.Module) -> None:
    """Wrap each transformer layer of the backbone(s) in its own FSDP unit unless the user named classes."""
    if plugin.transformer_cls_names_to_wrap is not None:
        return
    names = [name for module in model.modules() if module is not model
             for name in (getattr(module, "_no_split_modules", None) or [])]
    if names:
        plugin.transformer_cls_names_to_wrap = list(dict.fromkeys(names))


def sharding_summary(model: nn.Module) -> dict[str, Any]:
    """How the parameters are spread over the processes (a collective: every rank calls it), for the report:
    FSDP units, the parameter count, and the elements each rank holds (the whole model on every rank
    means nothing was sharded)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    total = sum(p.numel() for p in model.parameters())
    held = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters())
    per_rank: list[Any] = [held]
    if is_distributed():
        per_rank = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, held)
    return {"units": sum(isinstance(m, FSDPModule) for m in model.modules()), "parameters": total,
            "held_per_rank": per_rank}


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole, unsharded state dict on rank 0's CPU (empty elsewhere); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state: dict[str, torch.Tensor] = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state


@contextlib.contextmanager
def materialized(model: nn.Module, state: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Inside the block, the model's sharded parameters are the full tensors of ``state`` (rank 0's gathered
    copy), so the usual saving code writes a normal folder; the shards are back afterwards. ``None``: as is."""
    from torch.distributed.tensor import DTensor

    if state is None:
        yield
        return
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    try:
        for name, param in list(model.named_parameters()):
            if not isinstance(param, DTensor):
                continue
            owner_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(owner_name)
            swapped.append((owner, leaf, param))
            owner._parameters[leaf] = nn.Parameter(state[name], requires_grad=param.requires_grad)
        yield
    finally:
        for owner, leaf, param in reversed(swapped):
            owner._parameters[leaf] = param
