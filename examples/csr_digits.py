"""CSR on image features: scikit-learn's digits -> fixed random features -> label-supervised CSR -> kNN.

    python examples/csr_digits.py [--output_dir runs/csr_digits] [--topk 8] [--epochs 30] [--sanity_test]

The 8x8 digit images go through a fixed feature map (a seeded random projection to 128 dims and
tanh, standing in for an image backbone), are saved as an npz with labels, and train a CSR model
(hidden 256) with the supervised label-contrastive term. The sparse codes of the held-out images
are scored by 1-nearest-neighbour label accuracy against the first k dims of the dense features
(the same number of active dims). ``--sanity_test`` trains 3 epochs on 600 images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def features(images: np.ndarray, dim: int = 128) -> np.ndarray:
    proj = np.random.default_rng(0).normal(scale=1 / 8, size=(images.shape[1], dim))
    f = np.tanh((images / 16.0) @ proj * 2)
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def knn_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return float((y_train[np.argmax(unit(test) @ unit(train).T, axis=1)] == y_test).mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, kind, default in (("output_dir", str, "runs/csr_digits"), ("topk", int, 8), ("hidden_size", int, 256),
                                ("epochs", int, 30)):
        parser.add_argument(f"--{flag}", type=kind, default=default)
    parser.add_argument("--sanity_test", action="store_true", help="3 epochs on 400 images, 200 held out.")
    args = parser.parse_args(argv)

    from sklearn.datasets import load_digits

    from embforge import csr

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_digits(return_X_y=True)
    feats = features(images)
    perm = np.random.default_rng(0).permutation(len(labels))
    n_train = 400 if args.sanity_test else 1200
    tr, te = perm[:n_train], perm[n_train:n_train + (200 if args.sanity_test else len(perm))]
    npz = out / "digits_features.npz"
    np.savez(npz, embeddings=feats[tr], labels=labels[tr])
    result = csr.train(csr.TrainConfig(pretrained_emb=str(npz), output_dir=str(out / "csr"),
                                       hidden_size=args.hidden_size, topk=args.topk, auxk=64, use_label_CL=True,
                                       cl_coef=0.1, epochs=3 if args.sanity_test else args.epochs, batch_size=256,
                                       lr=1e-3, base_model="random-projection-128"))
    codes_tr = csr.encode(csr.EncodeConfig(csr_model=str(out / "csr"), input_file=str(npz)))
    codes_te = csr.encode_dense(result.model, feats[te])
    k = args.topk
    summary = {
        "train_images": len(tr), "test_images": len(te), "topk": k, "hidden_size": args.hidden_size,
        "knn_accuracy": {
            f"csr k={k}": knn_accuracy(codes_tr.dense(), labels[tr], codes_te.dense(), labels[te]),
            f"dense first {k} dims": knn_accuracy(feats[tr][:, :k], labels[tr], feats[te][:, :k], labels[te]),
            "dense all 128 dims": knn_accuracy(feats[tr], labels[tr], feats[te], labels[te]),
        },
        "mean_nonzeros_per_code": float((codes_te.dense() != 0).sum(axis=1).mean()),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for name, acc in summary["knn_accuracy"].items():
        print(f"{name:>22}: 1-NN accuracy {acc:.3f}")
    return summary


if __name__ == "__main__":
    main()
