"""The typed config of the training engine: ``transformers.TrainingArguments`` plus the reference systems' fields.

Every Trainer option (fp16/bf16, gradient checkpointing, DeepSpeed, save/logging steps, resume) works
unchanged, from YAML, flags or Python, under ``torchrun`` and ``accelerate launch``. ``embforge train``
binds its flags to this class; the engine (:mod:`embforge.training.run`) takes it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from transformers import TrainingArguments

from ..config import option
from ..errors import EmbforgeError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def resolved(value: T | None, flag: str) -> T:
    """A setting that ``recipes.resolve`` (or the data or model) has filled by now: the type checker learns it
    is set, and a caller that skipped resolution gets a clear error instead of a None deep in a loss."""
    if value is None:
        raise EmbforgeError(f"--{flag} is not set: the train config was not resolved before use")
    return value


def sizes(value: list[int] | Literal["auto"] | None, flag: str) -> list[int] | None:
    """A Matryoshka / TopK list once "auto" has been filled from the model's width."""
    if value == "auto":
        raise EmbforgeError(f"--{flag} auto is filled from the model's width before training; it was not")
    return value


@dataclass
class TrainConfig(TrainingArguments):
    # Spellings of inherited TrainingArguments fields used by the reference scripts; transformers 5
    # folded warmup_ratio into warmup_steps (a value below 1 is a ratio).
    EXTRA_ALIASES = {"warmup_ratio": "warmup_steps", "lr": "learning_rate", "epochs": "num_train_epochs"}

    # --- task
    task: str = option("embed", "What to train: an embedder (embed) or a cross-encoder reranker (rerank, "
                                "docs in embforge.training.rerank).", choices=("embed", "rerank"))
    rerank_loss: str | None = option(None, "--task rerank: ce (softmax over each group, default for query "
                                           "groups), bce (default for scored pairs) or margin_mse (teacher "
                                           "pos_scores/neg_scores).", choices=("ce", "bce", "margin_mse"))
    # --- model
    model_name_or_path: str | None = option(None, "Model folder to start from; default: the embedded all-MiniLM-L6-v2.",
                                            aliases=("model", "model_name"))
    pooling: str | None = option(None, "cls, mean, weightedmean or lasttoken; default: the model's own.",
                                 aliases=("sentence_pooling_method",))
    normalize: bool = option(True, "L2-normalise embeddings (cosine similarity).", aliases=("normlized", "normalized"))
    query_max_len: int = option(64, "Max tokens per query.")
    passage_max_len: int = option(256, "Max tokens per passage (--task rerank: per (query, passage) pair).",
                                  aliases=("max_length", "max_seq_length", "max_len"))
    query_instruction_for_retrieval: str | None = option(
        None, "Prepended to every query (a record's own 'prompt' wins); saved with the model.",
        aliases=("query_instruction",))
    passage_instruction_for_retrieval: str | None = option(None, "Prepended to every passage; saved with the model.",
                                                           aliases=("passage_instruction",))
    # --- data
    train_data: str | None = option(None, "Training data: a file, a folder (BEIR, save_to_disk) or a dataset-mixture YAML.",
                                    aliases=("dataset", "train_file"))
    train_format: str | None = option(None, "Force the data format (see `embforge data --help`).", aliases=("format",))
    train_split: str | None = option(None, "Split of a BEIR/HF folder (default: train).")
    train_group_size: int | None = option(None, "Passages per query: one positive and train_group_size-1 hard "
                                                "negatives (default 2; 1 for AnglE on records without negatives).")
    max_examples: int | None = option(None, "Use only the first N records (quick experiments).")
    strict: bool = option(False, "Fail instead of warning on records with too few negatives.")
    skip_bad_records: bool = option(False, "Skip malformed records (reporting count and locations) instead of failing.")
    streaming: bool = option(False, "Read --train_data lazily (one file or folder, not a mixture): memory holds "
                                    "--stream_buffer records, not the data set. Needs --max_steps.")
    stream_buffer: int = option(10000, "Streaming: records held at once; each batch draws from them at random, "
                                       "a record sharing a text with the batch waiting for a later one.")
    # --- loss (fields left at None take the --recipe's value, else the default named in the help; docs/losses.md)
    recipe: str | None = option(None, "Preset of a reference system: flag, angle, sgpt, mrl or topk-lora; flags you "
                                      "give still win.", choices=("flag", "angle", "sgpt", "mrl", "topk-lora"))
    loss: list[str] | None = option(None, "Loss(es): infonce, cosent, cosine, angle; several add up, weighted by "
                                          "--loss_weights (default infonce).", aliases=("losses", "loss_type"))
    loss_weights: list[float] | None = option(None, "One weight per --loss (default 1 each).")
    temperature: float | None = option(None, "InfoNCE temperature (default 0.02, FlagEmbedding; 0.05 = scale 20).")
    cosine_w: float | None = option(None, "AnglE: weight of the CoSENT term (default 1.0).", aliases=("w1",))
    cosine_tau: float | None = option(None, "Scale of CoSENT (--loss cosent and AnglE's cosine term; default 20).")
    ibn_w: float | None = option(None, "AnglE: weight of the in-batch-negatives term (default 20.0).", aliases=("w2",))
    ibn_tau: float | None = option(None, "AnglE: scale of the in-batch-negatives term (default 20).")
    angle_w: float | None = option(None, "AnglE: weight of the angle term (default 1.0).", aliases=("w3",))
    angle_tau: float | None = option(None, "AnglE: scale of the angle term (default 20).")
    teacher_name_or_path: str | None = option(None, "Distil the teacher's in-batch similarity distribution (same "
                                                    "tokenizer); the model's own path = self-distillation.",
                                              aliases=("teacher",))
    distill_w: float = option(1.0, "Weight of the distillation term.")
    distill_temperature: float = option(0.05, "Temperature of the similarity distributions in distillation.")
    teacher_scores: str = option("none", "Distil the data's teacher scores (pos_scores/neg_scores, e.g. a reranker's): "
                                         "kd = cross-entropy towards the teacher's softmax over each query's group "
                                         "(FlagEmbedding's --knowledge_distillation), margin_mse = MarginMSE; added "
                                         "to --loss with --kd_weight.", choices=("none", "kd", "margin_mse"))
    knowledge_distillation: bool = option(False, "FlagEmbedding's spelling of --teacher_scores kd.")
    kd_weight: float = option(1.0, "Weight of the --teacher_scores term.")
    kd_temperature: float = option(1.0, "--teacher_scores kd: divides teacher and student scores (the student's "
                                        "are similarity / --temperature); 1 = FlagEmbedding.")
    mrl_dims: list[int] | Literal["auto"] | None = option(None, "Matryoshka: train these prefix sizes too, largest first, e.g. "
                                              "384,256,128,64,32.", aliases=("matryoshka_dims",))
    mrl_weights: list[float] | None = option(None, "One weight per --mrl_dims entry (default 1 each).")
    apply_ese: bool | None = option(None, "ESE (2-D Matryoshka): train shallower layers and a compressed prefix "
                                          "too (default false).", aliases=("ese",))
    ese_compression_size: int | None = option(None, "ESE: size of the compressed prefix (default 128).")
    ese_kl_temperature: float | None = option(None, "ESE: temperature of the KL towards the PCA target (default 1.0).")
    topk_k_list: list[int] | Literal["auto"] | None = option(None, "Multi-TopK: also train the embedding masked to its k largest "
                                                 "entries, for each k, e.g. 16,32,64.", aliases=("topk_list",))
    topk_weights: list[float] | None = option(None, "One weight per --topk_k_list entry (default 1 each).")
    topk_mode: str | None = option(None, "Multi-TopK: rank entries by magnitude (|x|) or value (default magnitude).")
    apply_topk_to_backbone: bool | None = option(None, "Apply the multi-TopK loss to the backbone's embedding "
                                                       "(CSRv2 spelling; implied by --topk_k_list).")
    negatives_cross_device: bool = option(False, "Share passages across processes as extra negatives (gradient kept).")
    use_inbatch_neg: bool = option(True, "Use other queries' passages in the batch as negatives.")
    symmetric: bool = option(False, "Add the passage-to-query direction of the loss.")
    # --- memory
    gradcache: bool = option(False, "GradCache: full-batch contrastive loss at the memory of --chunk_size texts.")
    chunk_size: int | None = option(None, "GradCache chunk size (texts per forward pass).", aliases=("chunksize",))
    chunk_tokens: int | None = option(None, "GradCache token budget: at most this many padded tokens per forward "
                                            "pass (short texts get bigger chunks); with or instead of --chunk_size.")
    training_attention: bool = option(False, "Run attention through embforge's training function: the same "
                                             "dropout masks and, to ~1e-7, the same gradients as PyTorch's sdpa "
                                             "with fewer passes (about 6 %% faster steps on CPU).")
    attention_dropout: float | None = option(None, "Override the model's dropout on attention probabilities "
                                                   "(0 lets CPU attention take its fused kernel: about 1.7x faster "
                                                   "steps, but a different training; default: the model's own).")
    # --- parameter-efficient modes
    apply_lora: bool | None = option(None, "Train LoRA adapters (peft) instead of all weights (default false).",
                                     aliases=("use_lora",))
    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    lora_target_modules: list[str] | None = option(None, "Module names to adapt; default: peft's choice for the architecture.")
    save_adapter_only: bool = option(False, "Save only the LoRA adapter instead of merging it into the weights.")
    freezenonbias: bool | None = option(None, "BitFit: train only bias terms (default false).", aliases=("bitfit",))
    freeze: bool = option(False, "Freeze the backbone: train only the --addxlinear layers (or the biases, "
                                 "with --freezenonbias).")
    addxlinear: int = option(0, "Add N trainable Linear(d, d) layers on the pooled vector (SGPT); they start as "
                                "the identity and are saved as sentence-transformers Dense modules.",
                             aliases=("add_linear",))
    linearthenpool: bool = option(False, "Apply the --addxlinear layers to every token state before pooling "
                                         "instead of to the pooled vector.")
    useact: bool = option(False, "GELU after each --addxlinear layer (without it the layers stay linear).")
    asym: bool = option(False, "Asymmetric encoder: separate query and passage towers, both starting from the "
                               "model; the query tower is saved in query_encoder/.")
    # --- decoder LLMs (docs/llm.md)
    is_llm: bool = option(False, "Decoder-LLM defaults: last-token pooling, left padding, EOS appended to every "
                                 "text (flags you give still win).")
    padding_side: str | None = option(None, "Pad on the 'left' or 'right' (default: the model's own).",
                                      choices=("left", "right"))
    append_eos: bool | None = option(None, "End every text with the EOS token (default: on for decoder LLMs).",
                                     aliases=("add_eos",))
    apply_billm: bool = option(False, "BiLLM: bidirectional attention from layer --billm_start_index on "
                                      "(Llama/Qwen/Mistral/GPT-2 classes); saved and re-applied at load.")
    billm_start_index: int | None = option(None, "First bidirectional layer for --apply_billm (default: the "
                                                 "BiLLM_START_INDEX environment variable, else 0).")
    billm_model_class: str | None = option(None, "Accepted for AnglE command lines; the class is read from the "
                                                 "model's config.")
    load_kbit: int | None = option(None, "Load the backbone in 4 or 8 bits (bitsandbytes, CUDA GPU); use with "
                                         "--apply_lora.", choices=(4, 8))
    lora_top_layers: int | None = option(None, "LoRA on the last N decoder layers only: backpropagation then "
                                               "stops there, which makes a step much cheaper on CPU.")
    speca: bool = option(False, "SGPT brackets: queries start with [SOS], documents with {SOS} (new special "
                                "tokens); saved with the model.")
    specb: bool = option(False, "SGPT brackets: queries wrapped in [ ], documents in { }; saved with the model.")
    # --- run
    overwrite_output_dir: bool = option(False, "Train into --output_dir even if it holds another run or other "
                                               "files; the other run's checkpoints and model are removed.",
                                        aliases=("overwrite",))
    sanity_test: bool = option(False, "Tiny run to check the pipeline: a few records, batch 2, a few steps, one save.")

    def _set(self, name: str, value: object) -> None:
        """Set an inherited TrainingArguments field: transformers is untyped here, so assignments to its
        fields would make mypy guess their types from ours."""
        setattr(self, name, value)

    def __post_init__(self) -> None:
        if self.output_dir is None:
            self._set("output_dir", "outputs/embforge-train")
        if self.sanity_test:
            self._apply_sanity_test()
        if self.fp16 and self.bf16:
            raise EmbforgeError("--fp16 and --bf16 conflict: pick one precision")
        if (self.bf16 or self.bf16_full_eval) and not self.use_cpu and not _accelerator_available():
            # Without a GPU, --bf16 is CPU autocast (AMX where the CPU has it), which TrainingArguments
            # only allows with --use_cpu: say it once here instead of failing on a machine-specific flag.
            self._set("use_cpu", True)
        if self.deepspeed:
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                raise EmbforgeError("--deepspeed needs the deepspeed package (pip install deepspeed), "
                                    "which is not installed here")
        if self.knowledge_distillation and self.teacher_scores == "none":
            self.teacher_scores = "kd"
        if self.remove_unused_columns:
            self._set("remove_unused_columns", False)  # batches are dicts of tokenised sides, not model kwargs
        if self.disable_tqdm is None:
            # TrainingArguments hides its progress bar when transformers' logging is quieter than
            # WARNING, which the CLI sets to keep library chatter out; the bar is embforge's own output.
            self._set("disable_tqdm", False)
        super().__post_init__()

    def _apply_sanity_test(self) -> None:
        """--sanity_test's tiny run; a value the user set that it replaces is named, so a short or unsaved
        run is not mistaken for what the flags asked for."""
        max_steps = 4 if self.max_steps in (None, -1) or self.max_steps > 4 else self.max_steps
        tiny = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_steps": max_steps,
                "save_steps": max_steps, "logging_steps": 1, "max_examples": min(self.max_examples or 16, 16)}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        replaced = [f"--{name} {getattr(self, name)} -> {value}" for name, value in tiny.items()
                    if getattr(self, name) not in (value, defaults[name])]
        if replaced:
            logger.warning("--sanity_test replaces %s", ", ".join(replaced))
        for name, value in tiny.items():
            setattr(self, name, value)


# Training options worth a row in the card (the rest of TrainingArguments stays at its defaults).
HYPERPARAMETERS = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "warmup_steps", "weight_decay", "lr_scheduler_type", "temperature", "train_group_size", "use_inbatch_neg",
    "symmetric", "negatives_cross_device", "query_max_len", "passage_max_len", "query_instruction_for_retrieval",
    "passage_instruction_for_retrieval", "apply_lora", "lora_r", "lora_alpha", "freezenonbias", "freeze",
    "addxlinear", "asym", "gradcache", "chunk_size", "chunk_tokens", "attention_dropout", "training_attention", "fp16", "bf16", "seed", "sanity_test",
)


def hyperparameters_of(cfg: TrainConfig) -> dict[str, Any]:
    """The card-worthy training options of a train Config, skipping unset and off values."""
    out = {}
    for key in HYPERPARAMETERS:
        value = getattr(cfg, key, None)
        if value is None or value is False or (key in ("max_steps", "addxlinear") and value in (-1, 0)):
            continue
        if key.startswith("lora_") and not getattr(cfg, "apply_lora", False):
            continue
        if hasattr(value, "value"):  # enums such as lr_scheduler_type
            value = value.value
        out[key] = value
    return out



def _accelerator_available() -> bool:
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return bool(is_torch_bf16_gpu_available() or is_torch_xla_available())
