"""Trains the wide-and-deep model on a preprocessing run's output.

    python -m trainer.task --data_dir OUT --model_dir M [--train_steps 2000] [--batch_size 256]

Checkpoints to M/checkpoint.keras after every --steps_per_checkpoint steps and
resumes from it when run again (training stops at --train_steps in total).
Writes TensorBoard summaries to M/logs/, evaluates on the eval split, writes
M/metrics.json with the eval loss and metrics (regression: RMSE; binary: AUC,
log-loss and accuracy; multiclass: accuracy and log-loss) next to the same
metrics of a constant baseline fitted on train (the mean; the prior; the class
prior, whose majority class it predicts), and exports the serving model, raw
features in, to M/export/ (see trainer.export).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

from trainer.export import EXPORT_DIR_NAME, export_serving_model
from trainer.model import DataDirError, build_model, load_run, make_dataset

CHECKPOINT_NAME = "checkpoint.keras"


# Probabilities are clipped as Keras' cross-entropy clips them, so that the
# baseline's log-loss and the model's are the same measure.
_EPSILON = 1e-7


def _labels(run, split: str):
    import numpy as np

    batches = make_dataset(run, split, 4096, shuffle=False, repeat=False)
    return np.concatenate([y.numpy() for _, y in batches])


def baseline_metrics(run) -> dict:
    """The eval metrics of a constant prediction fitted on train: the mean
    (regression), the prior (binary), the class prior (multiclass)."""
    train, eval_labels = _labels(run, "train"), _labels(run, "eval")
    return constant_baseline(run.label_kind, train, eval_labels, run.label_classes)


def constant_baseline(label_kind: str, train, eval_labels, class_names=()) -> dict:
    """Metrics on `eval_labels` of the constant prediction fitted on `train`
    (multiclass: class ids, `class_names` in id order)."""
    import numpy as np

    if label_kind == "multiclass":
        prior = np.bincount(train.astype(np.int64), minlength=len(class_names)) / len(train)
        majority = int(np.argmax(prior))
        probabilities = np.clip(prior[eval_labels.astype(np.int64)], _EPSILON, 1 - _EPSILON)
        return {
            "baseline_class": class_names[majority] if class_names else majority,
            "baseline_accuracy": float(np.mean(eval_labels == majority)),
            "baseline_log_loss": float(-np.mean(np.log(probabilities))),
        }
    constant = float(train.mean())
    if label_kind == "binary":
        prior = min(max(constant, _EPSILON), 1 - _EPSILON)
        log_loss = -np.mean(eval_labels * np.log(prior) + (1 - eval_labels) * np.log(1 - prior))
        return {
            "baseline_prediction": constant,
            # A constant score ranks nothing: its AUC is 0.5 by definition.
            "baseline_auc": 0.5,
            "baseline_log_loss": float(log_loss),
            "baseline_accuracy": float(np.mean(eval_labels == (constant >= 0.5))),
        }
    rmse = float(np.sqrt(np.mean((eval_labels - constant) ** 2)))
    return {"baseline_prediction": constant, "baseline_rmse": rmse}


def train_and_evaluate(
    data_dir: str,
    model_dir: str,
    train_steps: int,
    batch_size: int,
    steps_per_checkpoint: int = 500,
) -> dict:
    import keras

    run = load_run(data_dir)
    os.makedirs(model_dir, exist_ok=True)
    checkpoint = os.path.join(model_dir, CHECKPOINT_NAME)
    if os.path.exists(checkpoint):
        model = keras.models.load_model(checkpoint)
        logging.info("resuming from %s at step %d", checkpoint, int(model.optimizer.iterations))
    else:
        model = build_model(run)
    done = int(model.optimizer.iterations.numpy()) if model.optimizer.built else 0
    remaining = max(0, train_steps - done)
    if remaining:
        chunk = min(steps_per_checkpoint, remaining)
        model.fit(
            make_dataset(run, "train", batch_size, shuffle=True, repeat=True),
            steps_per_epoch=chunk,
            epochs=math.ceil(remaining / chunk) + done // chunk,
            initial_epoch=done // chunk,
            callbacks=[
                keras.callbacks.ModelCheckpoint(checkpoint),
                keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
            ],
            verbose=2,
        )
    evaluation = model.evaluate(
        make_dataset(run, "eval", 1024, shuffle=False, repeat=False), return_dict=True, verbose=0
    )
    metrics = {f"eval_{name}": float(value) for name, value in evaluation.items()}
    metrics.update(baseline_metrics(run))
    metrics["global_step"] = int(model.optimizer.iterations.numpy())
    with open(os.path.join(model_dir, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2, sort_keys=True)
    export_serving_model(model, run, os.path.join(model_dir, EXPORT_DIR_NAME))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="Output of pipeline.preprocess.")
    parser.add_argument("--model_dir", required=True, help="Checkpoints, logs and metrics.")
    parser.add_argument("--train_steps", type=int, default=2000, help="Total training steps.")
    parser.add_argument("--batch_size", type=int, default=256, help="Examples per step.")
    parser.add_argument(
        "--steps_per_checkpoint", type=int, default=500, help="Steps between checkpoints."
    )
    args = parser.parse_args(argv)
    if args.train_steps < 0 or args.batch_size < 1 or args.steps_per_checkpoint < 1:
        parser.error("--train_steps must be >= 0, --batch_size and --steps_per_checkpoint >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        metrics = train_and_evaluate(
            args.data_dir, args.model_dir, args.train_steps, args.batch_size,
            args.steps_per_checkpoint,
        )  # fmt: skip
    except DataDirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
