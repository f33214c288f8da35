"""``csr encode``: dense embeddings (or texts, through a stacked folder) -> sparse codes npz."""

from __future__ import annotations

from pathlib import Path

from ..errors import EmbforgeError
from .config import EncodeConfig
from .sparse import SparseCodes


def encode(cfg: EncodeConfig) -> SparseCodes:
    from ..data.npz import load_npz
    from ..paths import check_output_file
    from .head import CSR_SUBFOLDER, is_stacked, load_stacked
    from .model import CSRModel
    from .sparse import encode_dense

    if not cfg.csr_model or not cfg.input_file:
        raise EmbforgeError("csr encode needs --csr_model and --input")
    folder, src = Path(cfg.csr_model), Path(cfg.input_file)
    if not folder.is_dir():
        raise EmbforgeError(f"{folder}: CSR model folder not found")
    if cfg.batch_size <= 0:
        raise EmbforgeError(f"--batch_size must be positive, got {cfg.batch_size}")
    if cfg.output_file:
        check_output_file(cfg.output_file)
    if src.suffix.lower() in (".npz", ".npy"):
        model = CSRModel.load(folder / CSR_SUBFOLDER if is_stacked(folder) else folder)
        data = load_npz(src)
        codes = encode_dense(model, data.embeddings, cfg.topk, cfg.batch_size, ids=data.ids,
                             show_progress=len(data) > 4 * cfg.batch_size)
    else:
        if not is_stacked(folder):
            raise EmbforgeError(f"{src}: texts need a stacked encoder+CSR folder, but {folder} holds only a CSR "
                                "model; give dense embeddings (.npz/.npy) or a folder with a csr/ head")
        from ..data.texts import read_texts

        texts, ids = read_texts(src, cfg.field)
        sparse = load_stacked(folder)
        codes = sparse.encode(texts, batch_size=min(cfg.batch_size, 256), is_query=cfg.is_query, topk=cfg.topk)
        if ids is not None:
            import numpy as np

            codes.ids = np.asarray(ids)
    if cfg.output_file:
        codes.save(cfg.output_file)
        print(f"wrote {len(codes)} sparse codes (k={codes.k} of {codes.hidden_size}) to {cfg.output_file}")
    return codes
