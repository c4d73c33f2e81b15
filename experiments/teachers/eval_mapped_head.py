"""RTE dev accuracy of a profile's RTE teacher at its start: the intermediate (MNLI) model found by
the package, with ``head_init`` applied, before any RTE step (the experiments measured 0.617 for
MNLI 9k x 1 epoch, seed 0, head ``nli``; ``fresh`` is at chance). Trains nothing: the intermediate
run must exist (``python -m ckdlab.cli finetune --task rte --profile quick`` trains it first).

    python experiments/teachers/eval_mapped_head.py --profile quick [--head-init fresh]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ckdlab.engine import TrainConfig, Trainer
from ckdlab.models import load_backbone
from ckdlab.workspace.intermediate import init_from_intermediate
from ckdlab.workspace.teachers import intermediate_dir, teacher_identity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--head-init", default=None, help="fresh | nli (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    identity, config, model_name = teacher_identity("rte", args.profile, seed=args.seed)
    head_init = args.head_init or identity.config["intermediate"]["head_init"]
    source = intermediate_dir("rte", args.profile, seed=args.seed) / "best"
    if not (source / "config.json").exists():
        raise SystemExit(f"no finished intermediate run at {source}; train the profile's RTE teacher first")
    torch.manual_seed(args.seed)
    model, tokenizer = load_backbone(model_name, num_labels=2)
    init_from_intermediate(model, source, head_init)
    trainer = Trainer(model, tokenizer, "rte", TrainConfig.from_dict({**config.to_dict(), "progress": False}))
    metrics = trainer.evaluate()
    print(json.dumps({"profile": args.profile, "intermediate": str(Path(source).parent.name), "head_init": head_init,
                      "rte_dev_before_training": metrics}))


if __name__ == "__main__":
    main()
