"""``embforge train``: contrastive bi-encoder training on the Hugging Face Trainer.

The config is ``transformers.TrainingArguments`` plus the reference systems' fields, so every
Trainer option (fp16/bf16, gradient checkpointing, DeepSpeed, save/logging steps, resume) works
unchanged, from YAML or flags, under ``torchrun`` and ``accelerate launch``.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import TrainingArguments

from ..config import option
from ..errors import EmbforgeError

HELP = "Fine-tune an embedding model contrastively (InfoNCE, in-batch + hard negatives)."


@dataclass
class Config(TrainingArguments):
    # Spellings of inherited TrainingArguments fields used by the reference scripts; transformers 5
    # folded warmup_ratio into warmup_steps (a value below 1 is a ratio).
    EXTRA_ALIASES = {"warmup_ratio": "warmup_steps", "lr": "learning_rate", "epochs": "num_train_epochs"}

    # --- model
    model_name_or_path: str | None = option(None, "Model folder to start from; default: the embedded all-MiniLM-L6-v2.",
                                            aliases=("model", "model_name"))
    pooling: str | None = option(None, "cls, mean, weightedmean or lasttoken; default: the model's own.",
                                 aliases=("sentence_pooling_method",))
    normalized: bool = option(True, "L2-normalise embeddings (cosine similarity).", aliases=("normlized", "normalize"))
    query_max_len: int = option(64, "Max tokens per query.")
    passage_max_len: int = option(256, "Max tokens per passage.", aliases=("max_length", "max_seq_length"))
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
    train_group_size: int = option(2, "Passages per query: one positive and train_group_size-1 hard negatives.")
    max_examples: int | None = option(None, "Use only the first N records (quick experiments).")
    strict: bool = option(False, "Fail instead of warning on records with too few negatives.")
    skip_bad_records: bool = option(False, "Skip malformed records (reporting count and locations) instead of failing.")
    # --- loss
    temperature: float = option(0.02, "InfoNCE temperature (FlagEmbedding: 0.02; 0.05 suits models trained at 20x scale).")
    negatives_cross_device: bool = option(False, "Share passages across processes as extra negatives (gradient kept).")
    use_inbatch_neg: bool = option(True, "Use other queries' passages in the batch as negatives.")
    symmetric: bool = option(False, "Add the passage-to-query direction of the loss.")
    # --- memory
    gradcache: bool = option(False, "GradCache: full-batch contrastive loss at the memory of --chunk_size texts.")
    chunk_size: int | None = option(None, "GradCache chunk size (texts per forward pass).", aliases=("chunksize",))
    # --- parameter-efficient modes
    apply_lora: bool = option(False, "Train LoRA adapters (peft) instead of all weights.", aliases=("use_lora",))
    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA alpha.")
    lora_dropout: float = option(0.05, "LoRA dropout.")
    lora_target_modules: list[str] | None = option(None, "Module names to adapt; default: peft's choice for the architecture.")
    save_adapter_only: bool = option(False, "Save only the LoRA adapter instead of merging it into the weights.")
    freezenonbias: bool = option(False, "BitFit: train only bias terms.", aliases=("bitfit",))
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
    # --- run
    sanity_test: bool = option(False, "Tiny run to check the pipeline: a few records, batch 2, a few steps, one save.")

    def __post_init__(self) -> None:
        if self.output_dir is None:
            self.output_dir = "outputs/embforge-train"
        if self.sanity_test:
            self.per_device_train_batch_size = 2
            self.gradient_accumulation_steps = 1
            self.max_steps = 4 if self.max_steps in (None, -1) or self.max_steps > 4 else self.max_steps
            self.save_steps = self.max_steps
            self.logging_steps = 1
            self.max_examples = min(self.max_examples or 16, 16)
        if self.fp16 and self.bf16:
            raise EmbforgeError("--fp16 and --bf16 conflict: pick one precision")
        if self.deepspeed:
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                raise EmbforgeError("--deepspeed needs the deepspeed package (pip install deepspeed), "
                                    "which is not installed here")
        if self.remove_unused_columns:
            self.remove_unused_columns = False  # batches are dicts of tokenised sides, not model kwargs
        super().__post_init__()


def run(cfg: Config):
    from ..train.run import train

    return train(cfg)
