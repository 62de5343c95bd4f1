"""Does ReLU6 survive quantisation better than ReLU? The articles' claim (seeds 000, 001, 003), measured.

Usage::

    python tools/bench_relu6_quantization.py                          # MobileNet V2 (width 0.5), shapes, 3 seeds
    python tools/bench_relu6_quantization.py --epochs 5 --max-images 3000 --bits 8 6 4 --seeds 0 --json out.json

Trains the same network twice with the same seed, data and schedule (``tinycnn train``'s recipe): once as
published (ReLU6) and once with every ReLU6 replaced by ReLU (``tinycnn.quantize.replace_activations``).
Each is then quantised after training (``tinycnn.quantize.quantize_model``: BN folded, weights per output
channel, layer inputs per tensor with min/max ranges from 256 training images) at each ``--bits``, and
evaluated on the validation images. Also printed: the activation ranges that explain the result (the
largest activation of any layer, and the median over layers of each layer's largest activation): an 8-bit
grid over ``[0, max]`` has a step of ``max / 255``.

Each seed changes the initialisation, the data split and the batch order of *both* networks (a pair per
seed). The summary gives, per activation, the mean and standard deviation over the seeds of the float32
accuracy, of each precision's accuracy *drop* (quantised minus float32, in points: the number that
matters) and of the activation ranges. With few seeds and a few hundred validation images, differences
smaller than the spread are noise.
"""
import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _train(config, activation, out_dir):
    """Train ``config``'s model with ReLU6 (as published) or with ReLU; returns the trainer."""
    from tinycnn import io, nn, quantize, run, train

    trainer, _, _ = run._make_trainer(config.resolved(), out_dir, progress=False, log=None)
    if activation == "relu":
        quantize.replace_activations(trainer.model, nn.ReLU6, nn.ReLU)   # no parameters: the optimizer is unaffected
    trainer.fit()
    trainer.model.load_state_dict(io.load_checkpoint(pathlib.Path(out_dir) / train.BEST_CHECKPOINT)["model"])
    return trainer


def _mean_std(values):
    """``"mean ± std"`` of a list (sample standard deviation, ddof = 1; just the value for one seed)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def summary_table(results, bits):
    """Markdown table over the seeds: per activation, float32 accuracy, each precision's drop, ranges.

    Accuracies and drops in percentage points; a drop is ``accuracy(int B) - accuracy(float32)`` of the
    same trained network, so it is negative when quantising hurts.
    """
    seeds = sorted({row["seed"] for row in results})
    header = (["activation", "float32 accuracy"] + [f"int{b} drop" for b in bits]
              + ["largest activation", "median layer max"])
    lines = [f"over {len(seeds)} seed(s) {seeds}: mean ± std, accuracy in %, drops in points",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for activation in ("relu6", "relu"):
        rows = [row for row in results if row["activation"] == activation]
        if not rows:
            continue
        cells = [activation, _mean_std([100 * row["float32"] for row in rows])]
        cells += [_mean_std([100 * (row[f"int{b}"] - row["float32"]) for row in rows]) for b in bits]
        cells += [_mean_std([row["max_activation"] for row in rows]), _mean_std([row["median_layer_max"] for row in rows])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-images", type=int, default=2000)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 5, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from tinycnn import quantize, run
    from tinycnn.evaluate import evaluate_model

    results = []
    for seed in args.seeds:
        config = dataclasses.replace(run.TrainConfig(), model=args.model, width_mult=args.width_mult,
                                     epochs=args.epochs, max_images=args.max_images, seed=seed)
        for activation in ("relu6", "relu"):
            with tempfile.TemporaryDirectory() as out_dir:
                trainer = _train(config, activation, out_dir)
            model, val_loader = trainer.model.eval(), trainer.val_loader
            images = np.concatenate([x for x, _ in trainer.train_loader])[:args.calibration]
            ranges = quantize.activation_ranges(model, images)
            highs = np.array([high for _, high in ranges.values()])
            row = {"seed": seed, "activation": activation,
                   "float32": evaluate_model(model, val_loader).accuracy,
                   "max_activation": float(highs.max()), "median_layer_max": float(np.median(highs))}
            for bits in args.bits:
                quantized = quantize.quantize_model(model, [images], bits=bits)
                row[f"int{bits}"] = evaluate_model(quantized, val_loader).accuracy
            results.append(row)
            print(json.dumps(row), flush=True)
    columns = ["float32"] + [f"int{bits}" for bits in args.bits]
    print(f"\n{'seed':>4} {'activation':<10} " + " ".join(f"{c:>8}" for c in columns)
          + f" {'max act.':>9} {'median layer max':>17}")
    for row in results:
        print(f"{row['seed']:>4} {row['activation']:<10} " + " ".join(f"{100 * row[c]:7.2f}%" for c in columns)
              + f" {row['max_activation']:9.2f} {row['median_layer_max']:17.2f}")
    print(summary_table(results, args.bits))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
