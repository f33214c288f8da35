"""Try fine-tuning recipes for examples/scifact.yaml: each trains on the mined SciFact train set and
reports SciFact test nDCG@10, so the pipeline's default recipe is a measured choice.

    python bench/scifact_recipe.py --out /tmp/recipes 'epochs=2,lr=5e-5,temp=0.05' 'epochs=3,lr=1e-4'

Every recipe reuses one mined file (mining runs on the base model and is recipe-independent) and
the embedding cache, so a sweep costs one training run and one corpus encode per recipe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import SCIFACT

from embforge.cli import main as embforge

KEYS = {"epochs": "num_train_epochs", "lr": "learning_rate", "temp": "temperature", "group": "train_group_size",
        "batch": "per_device_train_batch_size", "plen": "passage_max_len", "qlen": "query_max_len",
        "symmetric": "symmetric", "warmup": "warmup_ratio"}
DEFAULTS = {"epochs": "1", "lr": "5e-5", "temp": "0.05", "group": "2", "batch": "32", "plen": "256", "qlen": "64",
            "warmup": "0.1"}


def call(*argv: str) -> None:
    print("$ embforge", " ".join(argv), flush=True)
    if embforge(list(argv)) != 0:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help="key=value,... with keys " + ", ".join(KEYS))
    parser.add_argument("--out", default="/tmp/recipes")
    parser.add_argument("--range", default="10-100")
    args = parser.parse_args()
    out = Path(args.out)
    mined = out / f"mined_{args.range}.jsonl"
    if not mined.exists():
        call("mine", "--input_file", str(SCIFACT), "--split", "train", "--output_file", str(mined),
             "--range_for_sampling", args.range, "--negative_number", "7", "--seed", "0")
    for spec in args.recipes:
        recipe = dict(DEFAULTS, **dict(kv.split("=", 1) for kv in spec.split(",") if kv))
        name = "_".join(f"{k}{v}" for k, v in sorted(recipe.items()))
        model = out / name
        flags = [f"--{KEYS[k]}={v}" for k, v in recipe.items()]
        t0 = time.perf_counter()
        call("train", "--train_data", str(mined), "--output_dir", str(model), "--save_strategy", "no",
             "--report_to", "none", "--seed", "0", "--logging_steps", "5", *flags)
        t_train = time.perf_counter() - t0
        call("eval", "--data", str(SCIFACT), "--split", "test", "--model", str(model),
             "--report", str(model / "eval.json"))
        ndcg = json.loads((model / "eval.json").read_text())["metrics"]["nDCG@10"]
        row = {"recipe": recipe, "range": args.range, "ndcg@10": ndcg, "train_s": round(t_train, 1),
               "eval_s": round(time.perf_counter() - t0 - t_train, 1)}
        with (out / "results.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
