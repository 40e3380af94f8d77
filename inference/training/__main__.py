"""``python -m inference.training``: train or fine-tune an interactive segmentation model.

    python -m inference.training --output runs/compact --data-root ../shared/data --steps 4000
    python -m inference.training --output runs/mine --manifest cases.csv --init default --steps 500
    python -m inference.training --output runs/compact --data-root ../shared/data --export DEST

The output folder gets ``checkpoint.pth`` (resumable: run the same command again to continue) and the
model folder ``model/``, which the engine loads (``python -m inference import runs/compact/model --name X``).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.errors import EngineError
from inference.training.data import TrainingDataError, read_manifest, training_cases
from inference.training.train import TrainConfig, Trainer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference.training",
        description="Train an interactive segmentation model with simulated users (resumable).",
    )
    parser.add_argument("--output", type=Path, required=True, help="folder for the checkpoint and the model")
    source = parser.add_argument_group("data (at least one)")
    source.add_argument(
        "--data-root", type=Path, help="the shared data folder: its training split (never STS_016-020)"
    )
    source.add_argument(
        "--manifest", type=Path, action="append", default=[], help="CSV with columns image,label,modality"
    )
    parser.add_argument("--init", help="model folder or registered name to fine-tune (default: from scratch)")
    parser.add_argument("--steps", type=int, default=4000, help="total training steps (default 4000)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (mixed precision on CUDA)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument(
        "--export",
        type=Path,
        metavar="FOLDER",
        help="write the model folder of the run's checkpoint to FOLDER and stop (no training)",
    )
    args = parser.parse_args(argv)

    if args.data_root is None and not args.manifest:
        parser.error("give --data-root or --manifest")
    if args.steps < 1 or args.batch_size < 1 or args.checkpoint_every < 1:
        parser.error("--steps, --batch-size and --checkpoint-every must be at least 1")
    try:
        cases = training_cases(args.data_root) if args.data_root is not None else []
        for manifest in args.manifest:
            cases += read_manifest(manifest)
        if not cases:
            raise TrainingDataError("no training cases found")
        config = TrainConfig(
            output=args.output,
            steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            device=args.device,
            threads=args.threads,
            init=args.init,
        )
        trainer = Trainer(config, cases, progress=True)
        if args.export is not None:
            if not trainer.step:
                raise TrainingDataError(f"{args.output} holds no checkpoint to export")
            print(f"model folder: {trainer.export(args.export)} (step {trainer.step})")
            return 0
        if trainer.step:
            print(f"resuming from step {trainer.step} of {config.steps}", file=sys.stderr)
        model = trainer.run()
    except (EngineError, TrainingDataError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"model folder: {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
