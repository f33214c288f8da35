"""Image features: scikit-learn's digits through a fixed feature map, label-supervised CSR, kNN accuracy."""

import numpy as np
import torch
from sklearn.datasets import load_digits

from embforge import csr


def features(images: np.ndarray) -> np.ndarray:
    """A fixed (seeded) random projection + tanh, L2-normalised: a stand-in for an image backbone."""
    proj = np.random.default_rng(0).normal(scale=1 / 8, size=(images.shape[1], 128))
    f = np.tanh((images / 16.0) @ proj * 2)
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def knn_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    def unit(a):
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return float((y_train[np.argmax(unit(test) @ unit(train).T, axis=1)] == y_test).mean())


def test_label_supervised_csr_on_digits_beats_truncation_at_equal_active_dims(tmp_path):
    torch.set_num_threads(1)
    images, labels = load_digits(return_X_y=True)
    feats = features(images)
    perm = np.random.default_rng(0).permutation(len(labels))
    tr, te = perm[:1200], perm[1200:]
    np.savez(tmp_path / "digits.npz", embeddings=feats[tr], labels=labels[tr])
    k = 8
    result = csr.train(csr.TrainConfig(pretrained_emb=str(tmp_path / "digits.npz"), output_dir=str(tmp_path / "m"),
                                       hidden_size=256, topk=k, auxk=64, use_label_CL=True, cl_coef=0.1,
                                       epochs=12, batch_size=256, lr=1e-3, seed=0), show_progress=False)
    assert result.report["labels"]
    codes_tr = csr.encode_dense(result.model, feats[tr])
    codes_te = csr.encode_dense(result.model, feats[te])
    assert codes_te.indices.shape == (len(te), k)
    dense_te = codes_te.dense()
    nonzero = (dense_te != 0).sum(axis=1)
    assert (nonzero <= k).all() and (nonzero >= 1).mean() > 0.95  # ReLU after TopK may zero a selected latent
    sparse_acc = knn_accuracy(codes_tr.dense(), labels[tr], dense_te, labels[te])
    baseline = knn_accuracy(feats[tr][:, :k], labels[tr], feats[te][:, :k], labels[te])  # k dims, truncated
    chance = float(np.bincount(labels[tr]).max() / len(tr))
    assert baseline > chance
    print(f"digits kNN accuracy: CSR k={k} {sparse_acc:.3f}, first {k} dims {baseline:.3f}, chance {chance:.3f}")
    assert sparse_acc > baseline + 0.1, (sparse_acc, baseline)
