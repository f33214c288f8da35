"""Fine-tune the default model on SciFact train and compare SciFact test nDCG@10 before and after.

    python examples/finetune_scifact.py [--out runs/scifact] [--epochs 1] [--sanity_test]

Steps, each an embforge command: mine hard negatives for the 809 train queries from the corpus,
train one epoch of InfoNCE (in-batch + 1 mined negative), evaluate base and fine-tuned models on
the test split. About 15-20 minutes on 2 CPU cores; `--sanity_test` runs a few steps only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from embforge.cli import main as embforge

DATA = Path(__file__).resolve().parent / "data" / "scifact"


def run(*argv: str) -> None:
    print("$ embforge", " ".join(argv), flush=True)
    if embforge(list(argv)) != 0:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/scifact")
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--sanity_test", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    mined = out / "train_mined.jsonl"
    if not mined.exists():
        run("mine", "--input_file", str(DATA), "--split", "train", "--output_file", str(mined),
            "--range_for_sampling", "10-100", "--negative_number", "7", "--seed", "0")
    train = ["train", "--train_data", str(mined), "--output_dir", str(out / "model"),
             "--num_train_epochs", args.epochs, "--per_device_train_batch_size", "32", "--learning_rate", "5e-5",
             "--warmup_ratio", "0.1", "--temperature", "0.05", "--train_group_size", "2", "--query_max_len", "64",
             "--passage_max_len", "256", "--logging_steps", "5", "--save_strategy", "no", "--report_to", "none",
             "--seed", "0"]
    if args.sanity_test:
        train.append("--sanity_test")
    run(*train)
    results = {}
    for name, model in (("base", None), ("fine-tuned", out / "model")):
        report = out / f"eval_{name}.json"
        cmd = ["eval", "--data", str(DATA), "--split", "test", "--report", str(report)]
        if model is not None:
            cmd += ["--model", str(model)]
        run(*cmd)
        metrics = json.loads(report.read_text())["metrics"]
        results[name] = metrics.get("ndcg@10", metrics.get("nDCG@10"))
    print(json.dumps({"scifact_test_ndcg@10": results}, indent=2))


if __name__ == "__main__":
    main()
