"""The model zoo: small torch models with seeded random weights, exported to ONNX for tests and benchmarks.

    from models import zoo
    path, spec = zoo.export("bert", "out/bert.onnx", batch=2, seq=16)
    feeds = zoo.sample_inputs("bert", batch=2, seq=16)

Every model is built from a fixed seed, so two exports of one name hold the same weights. Exports use
torch's TorchScript-based exporter (``dynamo=False``) in eval mode with ``TrainingMode.PRESERVE``: constant
folding still runs (as in most ONNX files met in practice), but torch's Conv+BatchNormalization fusion
does not, so BatchNormalization nodes stay in the file and the runtime's own folding pass is exercised.
Batch (and sequence, for the transformers) are dynamic axes.

| name         | inputs                                        | outputs                          |
|--------------|-----------------------------------------------|----------------------------------|
| mlp          | input float32 [batch, 256]                    | logits [batch, 10]               |
| cnn          | input float32 [batch, 3, 32, 32]              | logits [batch, 10]               |
| resnet18     | input float32 [batch, 3, 224, 224]            | logits [batch, 1000]             |
| mobilenet_v2 | input float32 [batch, 3, 224, 224]            | logits [batch, 1000]             |
| bert         | input_ids, attention_mask, token_type_ids     | last_hidden_state [batch, seq,   |
|              | int64 [batch, seq]                            | 128], pooler_output [batch, 128] |
| gpt2         | input_ids int64 [batch, seq]                  | logits [batch, seq, 1000]        |
| mlp2048 (*)  | input float32 [batch, 2048]                   | output [batch, 2048]             |
| minilm_like (*) | as bert (6 layers, hidden 384, 12 heads,      | as bert, hidden 384              |
|              | FFN 1536; default seq 128)                    |                                  |

(*) benchmark-sized: not in `TEST_NAMES`, the list the test suite runs. `export(..., sparsity=, pattern=)`
prunes Linear and Conv weights first (`prune_module`: unstructured, 2:4 or 4x1 blocks).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

SEED = 0
VOCAB = 1000
MAX_POSITIONS = 512
HIDDEN = 128
HEADS = 4
FFN = 512
LAYERS = 2

# name -> (numpy dtype, concrete shape, (low, high)): low inclusive; high exclusive for integers.
InputSpec = dict[str, tuple[np.dtype, tuple[int, ...], tuple[float, float]]]


# ---------------------------------------------------------------------------------------------------------
# Architectures


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WideMLP(nn.Module):
    """4 x (Linear 2048 -> 2048 + ReLU): the sparse-MLP benchmark shape."""

    def __init__(self, width: int = 2048, layers: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(*(m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """3x32x32 -> 10: Conv+BN+ReLU, MaxPool, depthwise conv + 1x1 conv + ReLU6 (Clip) with a residual
    Add, AveragePool, Conv, GlobalAveragePool, Flatten, Linear (Gemm)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.act = nn.ReLU6()
        self.avg = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(x)
        y = self.pw(self.act(self.bn2(self.dw(x))))
        x = self.act(x + y)
        x = self.avg(x)
        x = torch.relu(self.conv3(x))
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (BasicBlock, [2, 2, 2, 2]), 3x224x224 -> 1000."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _conv_bn_relu6(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),  # linear bottleneck
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 layout at width 1.0, 3x224x224 -> 1000 (dropout is a no-op in eval)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2))
    SETTINGS += ((6, 320, 1, 1),)

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu6(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.classifier(x)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int = HIDDEN, heads: int = HEADS) -> None:
        super().__init__()
        self.hidden, self.heads, self.head_dim = hidden, heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[0], x.shape[1]
        return x.view(b, s, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], self.hidden)
        return self.norm(x + self.out(ctx))


class BertLayer(nn.Module):
    def __init__(self, hidden: int = HIDDEN, heads: int = HEADS, ffn: int = FFN) -> None:
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.norm(x + self.ffn(x))


class Bert(nn.Module):
    """A BERT-style encoder: by default 2 layers, hidden 128, 4 heads, FFN 512 (erf GELU), tanh pooler."""

    def __init__(
        self,
        hidden: int = HIDDEN,
        heads: int = HEADS,
        ffn: int = FFN,
        layers: int = LAYERS,
        vocab: int = VOCAB,
    ) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(MAX_POSITIONS, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, ffn) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        x = self.norm(x)
        mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled


def minilm_like() -> Bert:
    """all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, FFN 1536) with a 1000-token vocabulary."""
    return Bert(hidden=384, heads=12, ffn=1536, layers=6)


class GPT2Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head_dim = HIDDEN // HEADS
        self.ln_1 = nn.LayerNorm(HIDDEN)
        self.c_attn = nn.Linear(HIDDEN, 3 * HIDDEN)
        self.c_proj = nn.Linear(HIDDEN, HIDDEN)
        self.ln_2 = nn.LayerNorm(HIDDEN)
        self.mlp = nn.Sequential(nn.Linear(HIDDEN, FFN), nn.GELU(approximate="tanh"), nn.Linear(FFN, HIDDEN))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[0], x.shape[1]
        return x.view(b, s, HEADS, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[0], x.shape[1]
        q, k, v = self.c_attn(self.ln_1(x)).split(HIDDEN, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        causal = torch.tril(torch.ones(s, s, device=x.device))  # from the runtime seq length: Trilu
        scores = scores.masked_fill(causal == 0, torch.finfo(scores.dtype).min)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, s, HIDDEN)
        x = x + self.c_proj(ctx)
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """A GPT-2-style decoder: 2 blocks, hidden 128, 4 heads, fused qkv, tanh GELU, tied LM head."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, HIDDEN)
        self.wpe = nn.Embedding(MAX_POSITIONS, HIDDEN)
        self.blocks = nn.ModuleList(GPT2Block() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(HIDDEN)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return torch.matmul(self.ln_f(x), self.wte.weight.t())  # the LM head shares wte's weight


# ---------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class ModelInfo:
    name: str
    make: Callable[[], nn.Module]
    # input name -> (dtype, shape with "batch" / "seq" placeholders or ints, (low, high))
    inputs: dict[str, tuple[type, tuple[int | str, ...], tuple[float, float]]]
    # output name -> dynamic axes {axis: name}
    outputs: dict[str, dict[int, str]]
    default_seq: int | None = None  # None: not a sequence model
    large: bool = False  # benchmark-sized: left out of the test suite's model list

    @property
    def is_transformer(self) -> bool:
        return self.default_seq is not None


_IMAGE = (-1.0, 1.0)
_TOKENS = (0, VOCAB)
MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo("mlp", MLP, {"input": (np.float32, ("batch", 256), _IMAGE)}, {"logits": {0: "batch"}}),
        ModelInfo(
            "mlp2048",
            WideMLP,
            {"input": (np.float32, ("batch", 2048), _IMAGE)},
            {"output": {0: "batch"}},
            large=True,
        ),
        ModelInfo(
            "cnn", SmallCNN, {"input": (np.float32, ("batch", 3, 32, 32), _IMAGE)}, {"logits": {0: "batch"}}
        ),
        ModelInfo(
            "resnet18",
            ResNet18,
            {"input": (np.float32, ("batch", 3, 224, 224), _IMAGE)},
            {"logits": {0: "batch"}},
        ),
        ModelInfo(
            "mobilenet_v2",
            MobileNetV2,
            {"input": (np.float32, ("batch", 3, 224, 224), _IMAGE)},
            {"logits": {0: "batch"}},
        ),
        ModelInfo(
            "bert",
            Bert,
            {
                "input_ids": (np.int64, ("batch", "seq"), _TOKENS),
                "attention_mask": (np.int64, ("batch", "seq"), (0, 2)),
                "token_type_ids": (np.int64, ("batch", "seq"), (0, 2)),
            },
            {"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}},
            default_seq=16,
        ),
        ModelInfo(
            "gpt2",
            GPT2,
            {"input_ids": (np.int64, ("batch", "seq"), _TOKENS)},
            {"logits": {0: "batch", 1: "seq"}},
            default_seq=16,
        ),
        ModelInfo(
            "minilm_like",
            minilm_like,
            {
                "input_ids": (np.int64, ("batch", "seq"), _TOKENS),
                "attention_mask": (np.int64, ("batch", "seq"), (0, 2)),
                "token_type_ids": (np.int64, ("batch", "seq"), (0, 2)),
            },
            {"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}},
            default_seq=128,
            large=True,
        ),
    )
}
NAMES = list(MODELS)
# The models the test suite runs end to end (the large ones are for benchmarks).
TEST_NAMES = [n for n in NAMES if not MODELS[n].large]


def _info(name: str) -> ModelInfo:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(NAMES)}") from None


def _randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics and affine terms (fresh ones are the identity: folding them tests nothing),
    kept near identity so activations neither vanish nor explode through the deep models."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))


def build(name: str, seed: int = SEED) -> nn.Module:
    """The torch model `name` with seeded random weights, in eval mode."""
    info = _info(name)
    with torch.random.fork_rng(devices=[]):  # leave the caller's global torch RNG as it was
        torch.manual_seed(seed)
        model = info.make()
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            # He init on fan-out (torchvision's choice): keeps activations at unit scale through depth.
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
        elif isinstance(m, nn.Embedding):
            # BERT's and GPT-2's init (std 0.02); unit-variance embeddings make GPT-2's tied-head logits ~100.
            nn.init.normal_(m.weight, std=0.02, generator=gen)
    _randomize_batchnorm(model, gen)
    return model.eval()


def input_spec(name: str, batch: int = 1, seq: int | None = None) -> InputSpec:
    """name -> (dtype, concrete shape, (low, high)) for `batch` (and `seq`, default the model's)."""
    info = _info(name)
    seq = seq if seq is not None else info.default_seq
    dims = {"batch": batch, "seq": seq}
    return {
        k: (np.dtype(dt), tuple(dims[d] if isinstance(d, str) else d for d in shape), rng)
        for k, (dt, shape, rng) in info.inputs.items()
    }


def sample_inputs(name: str, batch: int = 1, seq: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs matching `input_spec`: uniform floats, token ids in range, and (for batch > 1) an
    attention mask whose rows after the first end in padding zeros (row 0 is never padded)."""
    rng = np.random.default_rng([seed, batch, seq or 0])
    feeds: dict[str, np.ndarray] = {}
    for k, (dt, shape, (lo, hi)) in input_spec(name, batch, seq).items():
        if k == "attention_mask":
            b, s = shape
            lengths = np.full(b, s)
            if b > 1:
                lengths[1:] = rng.integers(max(1, s // 2), s, size=b - 1, endpoint=False)
            feeds[k] = (np.arange(s)[None, :] < lengths[:, None]).astype(dt)
        elif np.issubdtype(dt, np.integer):
            feeds[k] = rng.integers(int(lo), int(hi), size=shape).astype(dt)
        else:
            feeds[k] = rng.uniform(lo, hi, size=shape).astype(dt)
    return feeds


PATTERNS = ("unstructured", "2:4", "4x1")


def prune_module(model: nn.Module, sparsity: float, pattern: str = "unstructured") -> int:
    """Prune every Linear and group-1 Conv2d weight of `model` in place (magnitude, see zeroskip.prune):
    `pattern` "unstructured" (`sparsity` of the entries), "2:4" (2 of every 4 along the input dim;
    `sparsity` is ignored) or "4x1" (`sparsity` of the blocks of 4 output rows). Weights shared with an
    Embedding (a tied LM head) and convs whose input dim does not fit the pattern are left alone.
    Returns how many weights were pruned."""
    from zeroskip import prune

    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose from {PATTERNS}")
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    count = 0
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)) or id(m.weight) in tied:
            continue
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            continue
        w = m.weight.detach().reshape(m.weight.shape[0], -1).numpy()
        if pattern == "2:4":
            if w.shape[1] % 4:
                continue
            pruned = prune.nm_mask(w, 2, 4)
        elif pattern == "4x1":
            pruned = prune.block_magnitude(w, sparsity, (4, 1))
        else:
            pruned = prune.magnitude(w, sparsity)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(pruned).reshape(m.weight.shape))
        count += 1
    return count


def export(
    name: str,
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    batch: int = 1,
    seq: int | None = None,
    seed: int = SEED,
    sparsity: float = 0.0,
    pattern: str = "unstructured",
) -> tuple[str, InputSpec]:
    """Export model `name` to `path` (parent folders are made); returns (path, input_spec(batch, seq)).

    The graph is traced at batch 2 (and the model's default sequence length) with batch and sequence
    as dynamic axes, so `batch` and `seq` only choose the concrete shapes of the returned spec.
    `sparsity` > 0 (or pattern "2:4") prunes the weights first (`prune_module`).
    """
    info = _info(name)
    model = build(name, seed)
    if sparsity > 0 or pattern == "2:4":
        prune_module(model, sparsity, pattern)
    trace_seq = info.default_seq
    example = tuple(torch.from_numpy(v) for v in sample_inputs(name, 2, trace_seq, seed=seed).values())
    dynamic_axes: dict[str, dict[int, str]] = {}
    for k, (_, shape, _) in info.inputs.items():
        dynamic_axes[k] = {i: d for i, d in enumerate(shape) if isinstance(d, str)}
    dynamic_axes.update(info.outputs)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The TorchScript exporter warns that it is deprecated, and the tracer about Python ints from
        # shapes (they are traced as Shape ops here; the tests check other shapes against onnxruntime).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # PRESERVE with an eval-mode model folds nothing trainable; the advice is for training mode.
        warnings.filterwarnings("ignore", message=".*constant folding be turned off.*", category=UserWarning)
        torch.onnx.export(
            model,
            example,
            path,
            dynamo=False,
            opset_version=opset,
            input_names=list(info.inputs),
            output_names=list(info.outputs),
            dynamic_axes=dynamic_axes,
            training=torch.onnx.TrainingMode.PRESERVE,  # eval mode, but no Conv+BN fusion
            do_constant_folding=True,
        )
    return path, input_spec(name, batch, seq)
