"""The networks of supervised few-shot meta-learning, usable functionally over a params dict.

Two bodies, described by a :class:`NetSpec`:

* ``"mlp"``: fully connected layers with an activation after each (Finn et al. 2017, sec. 5.1:
  two hidden layers of 40 with ReLU for sinusoid regression);
* ``"conv4"``: the standard four-block encoder of few-shot classification (Vinyals et al. 2016;
  Snell et al. 2017; Finn et al. 2017, sec. 5.2): each block a 3×3 convolution (padding 1, no bias:
  the batch norm's shift replaces it), batch normalisation, ReLU and 2×2 max-pooling; 64 channels
  for Omniglot, 32 for mini-ImageNet in Finn et al.  A 28×28 input ends as 64×1×1 (a 64-dimensional
  embedding), an 84×84 one as 32×5×5 (800).
  Inputs smaller than 16×16 (8×8 digits) would pool down to nothing by the fourth block (8, 4, 2,
  1, 0), so for them every pooling rounds up (``ceil_mode``): 8, 4, 2, 1, 1.

Batch normalisation is in the *transductive* form MAML's reference code uses: every forward pass
normalises with the statistics of the batch it is given (no running statistics, the same in
training and at meta-test), with a learnable scale and shift.  A batch is the examples of *one*
task: ``x`` of shape ``[N, *input_shape]`` is one task's batch, ``[T, N, *input_shape]`` is ``T``
tasks' batches side by side, each normalised by its own statistics (so the stacked form equals a
loop over tasks, and ``torch.func.vmap`` over tasks sees each task's batch alone).

The embedding is followed by a linear ``head`` (MAML, ANIL, Meta-SGD, Reptile) or nothing (the
metric learners: ProtoNets and Matching Networks compare embeddings).  :meth:`Net.embed` is the
encoder alone, :meth:`Net.forward` encoder and head; both take the parameters explicitly, so the
inner loops are side-effect free (``net(params, x)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Tensor]

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}

#: batch-norm ε (PyTorch's default)
BN_EPS = 1e-5

#: inputs with a side below this pool with ``ceil_mode`` (see the module docstring)
SMALL_INPUT = 16


@dataclass(frozen=True)
class NetSpec:
    """Architecture of a supervised network; enough to rebuild it anywhere (logged, pickled in
    checkpoints as the learner's ``policy_spec``).

    Attributes:
        input_shape: shape of one input: ``(d,)`` for an MLP (larger shapes are flattened);
            ``(C, H, W)`` or ``(H, W)`` (one channel) for ``conv4``.
        output_dim: classes of an episode (``ways``) or the regression target's size.
        kind: ``"mlp"`` or ``"conv4"``.
        hidden_sizes: widths of the MLP's hidden layers (MAML's sinusoid: ``(40, 40)``).
        channels: filters of each conv block (64 for Omniglot-like inputs, 32 for mini-ImageNet).
        activation: of the MLP's hidden layers (``conv4`` always uses ReLU).
    """

    input_shape: tuple[int, ...]
    output_dim: int
    kind: Literal["mlp", "conv4"] = "mlp"
    hidden_sizes: tuple[int, ...] = (40, 40)
    channels: int = 64
    activation: Literal["relu", "tanh"] = "relu"

    def __post_init__(self) -> None:
        # JSON gives lists: keep the spec hashable and equal to one built from tuples
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise ValueError(f"NetSpec: input_shape must be positive sizes, got {self.input_shape}")
        if self.output_dim < 1:
            raise ValueError(f"NetSpec: output_dim must be >= 1, got {self.output_dim}")
        if self.kind not in ("mlp", "conv4"):
            raise ValueError(f"NetSpec: unknown kind {self.kind!r}; valid: 'mlp', 'conv4'")
        if self.kind == "conv4" and len(self.input_shape) not in (2, 3):
            raise ValueError(f"NetSpec: conv4 takes (C, H, W) or (H, W) inputs, got input_shape {self.input_shape}")
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"NetSpec: hidden sizes must be >= 1, got {self.hidden_sizes}")
        if self.channels < 1:
            raise ValueError(f"NetSpec: channels must be >= 1, got {self.channels}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"NetSpec: unknown activation {self.activation!r}; valid: {sorted(_ACTIVATIONS)}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of a ``conv4`` input."""
        s = self.input_shape
        return (1, s[0], s[1]) if len(s) == 2 else (s[0], s[1], s[2])

    @property
    def ceil_pooling(self) -> bool:
        """Whether ``conv4`` pools with ``ceil_mode`` (an input side below 16)."""
        return min(self.image_shape[1:]) < SMALL_INPUT

    def feature_map(self) -> tuple[int, int, int]:
        """``(C, H, W)`` after the four ``conv4`` blocks."""
        _, h, w = self.image_shape
        for _ in range(4):
            h, w = _pooled(h, self.ceil_pooling), _pooled(w, self.ceil_pooling)
        return self.channels, h, w

    @property
    def embedding_dim(self) -> int:
        """Size of :meth:`Net.embed`'s output."""
        if self.kind == "conv4":
            return math.prod(self.feature_map())
        return self.hidden_sizes[-1] if self.hidden_sizes else math.prod(self.input_shape)


def _pooled(n: int, ceil: bool) -> int:
    return -(-n // 2) if ceil else n // 2


class Net(nn.Module):
    """An MLP or conv4 encoder and, with ``head``, a linear layer to ``output_dim``.

    Parameter names: ``body.{i}.weight|bias`` (MLP layers), ``blocks.{i}.conv.weight`` and
    ``blocks.{i}.norm.weight|bias`` (conv blocks: the convolution's filters -- no bias, the batch
    norm after it would cancel one -- and the batch norm's scale and shift), ``head.weight|bias``.
    """

    def __init__(self, spec: NetSpec, *, head: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.body = nn.ModuleList()
        self.blocks = nn.ModuleList()
        if spec.kind == "mlp":
            sizes = (math.prod(spec.input_shape), *spec.hidden_sizes)
            self.body.extend(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        else:
            c_in = spec.image_shape[0]
            for _ in range(4):
                block = nn.Module()
                # no bias: batch norm's mean subtraction cancels it (its gradient is 0 up to rounding,
                # which Adam would amplify into a random walk)
                block.conv = nn.Conv2d(c_in, spec.channels, kernel_size=3, padding=1, bias=False)
                # parameters only: the forward pass below always uses batch statistics
                block.norm = nn.BatchNorm2d(spec.channels, track_running_stats=False)
                self.blocks.append(block)
                c_in = spec.channels
        self.head = nn.Linear(spec.embedding_dim, spec.output_dim) if head else None
        self._act = _ACTIVATIONS[spec.activation]

    def embed(self, params: Params, x: Tensor) -> Tensor:
        """The encoder: ``[*batch, *input_shape] -> [*batch, embedding_dim]``; batch norm
        normalises over the last batch dimension (one task's examples)."""
        spec = self.spec
        if spec.kind == "mlp":
            h = x.reshape(*x.shape[: x.dim() - len(spec.input_shape)], -1)
            for i in range(len(self.body)):
                h = self._act(F.linear(h, params[f"body.{i}.weight"], params[f"body.{i}.bias"]))
            return h
        image = spec.image_shape
        lead = x.shape[: x.dim() - len(spec.input_shape)]
        if not lead:
            raise ValueError(f"Net.embed needs a batch of inputs [N, {', '.join(map(str, spec.input_shape))}]")
        h = x.reshape(-1, *image)
        for i in range(4):
            h = F.conv2d(h, params[f"blocks.{i}.conv.weight"], padding=1)
            h = batch_norm(h, params[f"blocks.{i}.norm.weight"], params[f"blocks.{i}.norm.bias"], group=lead[-1])
            h = F.max_pool2d(torch.relu(h), kernel_size=2, stride=2, ceil_mode=spec.ceil_pooling)
        return h.reshape(*lead, -1)

    def forward(self, params: Params, x: Tensor) -> Tensor:  # type: ignore[override]
        """Encoder and linear head: ``[*batch, *input_shape] -> [*batch, output_dim]`` (logits or
        regression outputs).  The head is ``params``' (``head.weight``, ``head.bias``)."""
        return F.linear(self.embed(params, x), params["head.weight"], params["head.bias"])


def batch_norm(h: Tensor, weight: Tensor, bias: Tensor, *, group: int) -> Tensor:
    """Transductive batch norm of ``h`` ``[B, C, H, W]``: each run of ``group`` consecutive
    examples (one task's batch) is normalised by its own mean and (biased) variance per channel,
    then scaled and shifted (Ioffe & Szegedy 2015, Algorithm 1, without running statistics)."""
    b, c, hh, ww = h.shape
    g = h.reshape(b // group, group, c, hh, ww)
    mean = g.mean(dim=(1, 3, 4), keepdim=True)
    var = (g - mean).pow(2).mean(dim=(1, 3, 4), keepdim=True)
    g = (g - mean) * torch.rsqrt(var + BN_EPS)
    return g.reshape(b, c, hh, ww) * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)


def net_spec_for(input_shape: tuple[int, ...], output_dim: int, *, hidden_sizes: tuple[int, ...] = (40, 40),
                 activation: Literal["relu", "tanh"] = "relu", channels: int = 64) -> NetSpec:
    """The usual network for a task distribution's inputs: ``conv4`` with ``channels`` filters for
    images (``(C, H, W)`` or ``(H, W)``), else an MLP of ``hidden_sizes``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) in (2, 3):
        return NetSpec(input_shape=shape, output_dim=output_dim, kind="conv4", channels=channels)
    return NetSpec(input_shape=shape, output_dim=output_dim, kind="mlp", hidden_sizes=tuple(hidden_sizes),
                   activation=activation)


def make_net(spec: NetSpec, *, head: bool = True, seed: int | None = None) -> Net:
    """Build the network ``spec`` describes (PyTorch's default initialisation; batch-norm scale 1,
    shift 0); ``seed`` fixes its initial parameters."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make_net(spec, head=head)
    return Net(spec, head=head)


__all__ = ["BN_EPS", "Net", "NetSpec", "Params", "batch_norm", "make_net", "net_spec_for"]
