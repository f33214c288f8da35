"""Tiny models built from configs, so tests never touch a hub and run in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = (
    "the a an of to in and is was for on with as by at from that this it be are or not cat dog bird fish "
    "runs jumps sleeps eats house tree car road city water fire light dark red blue green small big old new "
    "query passage document search find good bad fast slow happy sad man woman child play game music "
    "science cell protein gene cancer study result method data model learn train test one two three"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_bert(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 32, dropout: float = 0.1) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokens = SPECIAL + WORDS + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, model_max_length=64)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _word_tokenizer(padding_side: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>"] + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=64, padding_side=padding_side)


def write_llama(folder: Path, seed: int = 0, padding_side: str = "left") -> Path:
    from transformers import LlamaConfig, LlamaModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = _word_tokenizer(padding_side)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2)
    LlamaModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_gpt2(folder: Path, seed: int = 0, padding_side: str = "right") -> Path:
    from transformers import GPT2Config, GPT2Model

    folder.mkdir(parents=True, exist_ok=True)
    tok = _word_tokenizer(padding_side)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                     bos_token_id=1, eos_token_id=2)
    GPT2Model(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


SENTENCES = [
    "the cat sleeps in the house",
    "a dog runs on the road",
    "science study of protein and gene data",
    "the big red car is fast",
    "one two three",
    "a small bird eats",
    "happy child play music game in the city with a old man and a new woman",
    "cancer cell",
]
