"""Typed configs of ``embforge csr embed | train | encode``; the CLI, YAML and the Python API share them.

Field aliases accept the CSR/CSRv2 reference scripts' spellings (``--initial_top``, ``--model_suffix``,
``--base_model``, ``--hidden-size``), so their command lines keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option


@dataclass
class EmbedConfig:
    model_name_or_path: str | None = option(None, "Model folder; default: the embedded all-MiniLM-L6-v2.",
                                            aliases=("model", "base_model"))
    data: str | None = option(None, "What to embed: a BEIR folder (its corpus; with --with_queries also its queries, "
                                    "paired with their relevant documents), a .txt file (one text per line) or "
                                    "a JSONL file (--field, labels from --label_field when present).",
                              aliases=("input", "input_file"))
    output_file: str | None = option(None, "Output .npz (keys: embeddings, and ids / labels / queries / "
                                           "pair_index when the data has them).", aliases=("output",))
    field: str = option("text", "JSONL field to embed ('title+text' joins a BEIR corpus's title and text).")
    label_field: str = option("label", "JSONL field holding a class label (stored as 'labels' when every line has it).")
    with_queries: bool = option(False, "BEIR folder: also embed the queries of --split and store them with "
                                       "'pair_index' (the row of one relevant document per query).")
    split: str = option("train", "qrels split used for the query/document pairs of a BEIR folder.")
    batch_size: int = option(64, "Texts per forward pass.")
    no_cache: bool = option(False, "Do not read or write the embedding cache ($EMBFORGE_CACHE).")


@dataclass
class TrainConfig:
    pretrained_emb: str | None = option(None, "The .npz (or .npy) of embeddings to train on; read memory-mapped.",
                                        aliases=("train_data", "data"))
    output_dir: str | None = option(None, "Where the CSR model, train_report.json and loss.png go.")
    embed_dim: int | None = option(None, "Embedding size; checked against the data (default: the data's).")
    hidden_size: int | None = option(None, "Latent size (default: 4 x embed_dim).", aliases=("hidden-size",))
    topk: int = option(32, "Active latents per code (k).")
    auxk: int = option(512, "Dead latents used by the AuxK loss (0 turns it off).")
    auxk_coef: float = option(1 / 32, "Weight of the AuxK loss.")
    dead_threshold: int = option(30, "A latent is dead after this many training steps without activating.")
    multi_k: int = option(4, "The larger k of the second reconstruction term is multi_k x topk.")
    multi_k_coef: float = option(1 / 8, "Weight of the reconstruction at the larger k.")
    use_CL: bool = option(False, "Add the contrastive term (pairs from 'pair_index'/'pair_embeddings', else each "
                                 "row with itself as in the reference).", aliases=("use_cl",))
    cl_coef: float = option(0.1, "Weight of the contrastive term(s).")
    temperature: float = option(0.2, "Temperature of the contrastive terms.")
    use_label_CL: bool = option(False, "Add the supervised label-contrastive term (needs 'labels' in the npz).",
                                aliases=("use_label_cl",))
    label_cl_coef: float | None = option(None, "Weight of the label-contrastive term (default: cl_coef).")
    initial_topk: int | None = option(None, "k at the start of training, annealed down to --topk.",
                                      aliases=("initial_top",))
    k_decay_ratio: float = option(0.0, "Fraction of training over which k goes from initial_topk to topk.")
    epochs: int = option(10, "Passes over the data.")
    lr: float = option(4e-4, "Adam learning rate.", aliases=("learning_rate",))
    weight_decay: float = option(0.0, "Adam weight decay.", aliases=("wd",))
    batch_size: int = option(4096, "Rows per step.", aliases=("batch-size",))
    seed: int = option(1227, "Seed for initialisation and shuffling.")
    device: str | None = option(None, "cpu, cuda, cuda:N (default: cuda when available, else cpu).", aliases=("gpu",))
    base_model: str | None = option(None, "Name of the model that made the embeddings (recorded in the report).")
    model_suffix: str | None = option(None, "Suffix for the output folder name (reference spelling); the model "
                                            "goes to output_dir/csr_k{topk}_{suffix} when given.")
    stack_on: str | None = option(None, "Also save this encoder (a model folder, or 'default') with the trained "
                                        "CSR head in its csr/ subfolder, as OUTPUT_DIR/with_encoder.")
    log_every: int = option(50, "Steps between log lines (loss, dead-latent fraction).")


@dataclass
class EncodeConfig:
    csr_model: str | None = option(None, "A trained CSR folder (csr train's output) or a stacked encoder+CSR folder.",
                                   aliases=("model", "csr"))
    input_file: str | None = option(None, "Dense embeddings (.npz/.npy) to encode; or, with a stacked folder, "
                                          "texts (.txt or .jsonl with --field).",
                                    aliases=("input", "pretrained_emb", "data"))
    output_file: str | None = option(None, "Output .npz with 'indices' (n, k) int32, 'values' (n, k) float32, "
                                           "'hidden_size' and, when known, 'ids'.", aliases=("output",))
    topk: int | None = option(None, "Active latents per code (default: the model's k).")
    field: str = option("text", "JSONL field to embed when encoding texts with a stacked folder.")
    batch_size: int = option(4096, "Rows per forward pass.")
    is_query: bool = option(False, "Texts are queries (stacked folder only).")
