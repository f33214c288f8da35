"""Dense layers around pooling: SGPT's ``--addxlinear`` head and sentence-transformers ``Dense`` modules.

A head is a chain of ``Linear`` layers, each followed by an activation (``identity`` when there is
none), exactly like a sentence-transformers ``Dense`` module, so one folder describes the same model
to both libraries. Each layer reads either every token state (``on_tokens``: SGPT's
``--linearthenpool``, ST's ``module_input_name="token_embeddings"``) or the pooled vector. Token layers
must all come before pooled ones, since pooling sits between them.

A layer is described by a plain dict (``in_features``, ``out_features``, ``bias``, ``activation``,
``on_tokens``) so the list lives in ``EncoderConfig.dense`` and round-trips through ``embforge.json``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import EmbforgeError

# Activation name -> (module class, the dotted name sentence-transformers writes for it).
ACTIVATIONS: dict[str, tuple[type[nn.Module], str]] = {
    "identity": (nn.Identity, "torch.nn.modules.linear.Identity"),
    "gelu": (nn.GELU, "torch.nn.modules.activation.GELU"),
    "tanh": (nn.Tanh, "torch.nn.modules.activation.Tanh"),
    "relu": (nn.ReLU, "torch.nn.modules.activation.ReLU"),
}
# SGPT's --useact: GELU, the activation GPT-Neo/GPT-J (SGPT's backbones) use in their own MLPs; it
# keeps negative coordinates informative, where tanh would squash large pooled values.
SGPT_ACTIVATION = "gelu"

_LAYER_KEYS = ("in_features", "out_features", "bias", "activation", "on_tokens")


def activation_name(st_name: str | None) -> str:
    """Our name for the activation a sentence-transformers Dense config names (``None``: ST's Tanh default)."""
    if st_name is None:
        return "tanh"
    short = st_name.rsplit(".", 1)[-1].lower()
    if short not in ACTIVATIONS:
        raise EmbforgeError(f"Dense activation {st_name!r} is not supported ({', '.join(ACTIVATIONS)})")
    return short


def st_activation_name(name: str) -> str:
    return ACTIVATIONS[name][1]


def sgpt_layers(dim: int, count: int, use_activation: bool, on_tokens: bool) -> list[dict[str, Any]]:
    """The layer list of SGPT's ``--addxlinear count [--useact] [--linearthenpool]``: ``count`` × Linear(dim, dim)."""
    if count < 0:
        raise EmbforgeError(f"the number of added linear layers must be >= 0, got {count}")
    activation = SGPT_ACTIVATION if use_activation else "identity"
    return [{"in_features": dim, "out_features": dim, "bias": True, "activation": activation,
             "on_tokens": on_tokens} for _ in range(count)]


def check_layers(layers: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Validate and fill defaults; the order and dimensions must chain the way pooling allows."""
    if not layers:
        return None
    out: list[dict[str, Any]] = []
    seen_pooled = False
    for i, raw in enumerate(layers):
        if not isinstance(raw, dict):
            raise EmbforgeError(f"dense layer #{i} must be a mapping, got {type(raw).__name__}")
        unknown = set(raw) - set(_LAYER_KEYS)
        if unknown:
            raise EmbforgeError(f"dense layer #{i}: unknown key(s) {', '.join(sorted(unknown))}")
        layer: dict[str, Any] = {"in_features": int(raw["in_features"]), "out_features": int(raw["out_features"]),
                 "bias": bool(raw.get("bias", True)), "activation": str(raw.get("activation", "identity")).lower(),
                 "on_tokens": bool(raw.get("on_tokens", False))}
        if layer["activation"] not in ACTIVATIONS:
            raise EmbforgeError(f"dense layer #{i}: unknown activation {layer['activation']!r} ({', '.join(ACTIVATIONS)})")
        if layer["in_features"] <= 0 or layer["out_features"] <= 0:
            raise EmbforgeError(f"dense layer #{i}: features must be positive")
        if out and layer["in_features"] != out[-1]["out_features"]:
            raise EmbforgeError(f"dense layer #{i} takes {layer['in_features']} features but the layer before "
                                f"gives {out[-1]['out_features']}")
        if layer["on_tokens"] and seen_pooled:
            raise EmbforgeError(f"dense layer #{i} works on token states but follows a layer on the pooled vector")
        seen_pooled = seen_pooled or not layer["on_tokens"]
        out.append(layer)
    return out


class DenseLayer(nn.Module):
    """``activation(linear(x))`` with the same parameter names as sentence-transformers' Dense (``linear.*``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, activation: str):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = ACTIVATIONS[activation][0]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


class DenseHead(nn.Module):
    """The dense layers of an Encoder; ``tokens`` runs before pooling, ``pooled`` after it."""

    def __init__(self, layers: list[dict[str, Any]] | None):
        super().__init__()
        specs = check_layers(layers)
        if not specs:
            raise EmbforgeError("a dense head needs at least one layer")
        self.specs = specs
        self.layers = nn.ModuleList(
            DenseLayer(s["in_features"], s["out_features"], s["bias"], s["activation"]) for s in specs)
        self._n_tokens = sum(1 for s in specs if s["on_tokens"])

    def reset_to_identity(self) -> None:
        """Square layers start as the identity map (bias 0), so before training the head leaves the
        backbone's geometry as it was (up to the activation) instead of a random projection of it."""
        with torch.no_grad():
            for layer in self.layers:
                weight = layer.linear.weight
                if weight.shape[0] == weight.shape[1]:
                    weight.copy_(torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device))
                    if layer.linear.bias is not None:
                        layer.linear.bias.zero_()

    @property
    def token_dim(self) -> int | None:
        """Width of the token states pooling sees (``None``: unchanged)."""
        return self.specs[self._n_tokens - 1]["out_features"] if self._n_tokens else None

    @property
    def out_dim(self) -> int:
        return int(self.specs[-1]["out_features"])

    def tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[: self._n_tokens]:
            hidden = layer(hidden)
        return hidden

    def pooled(self, emb: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[self._n_tokens:]:
            emb = layer(emb)
        return emb

    def layer_states(self) -> list[dict[str, torch.Tensor]]:
        """One state dict per layer, keyed as a sentence-transformers Dense saves them."""
        return [{k: v.detach().contiguous() for k, v in layer.state_dict().items()} for layer in self.layers]

    def load_layer_states(self, states: list[dict[str, torch.Tensor]], source: str) -> None:
        if len(states) != len(self.layers):
            raise EmbforgeError(f"{source}: holds {len(states)} dense layer(s), the encoder has {len(self.layers)}")
        for i, (layer, state) in enumerate(zip(self.layers, states)):
            try:
                layer.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise EmbforgeError(f"{source}: dense layer #{i} does not match: {exc}") from exc
