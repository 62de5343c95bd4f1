"""Seed 002's experiment: a BP network for y = x1^2 + x2^2, trained alone or initialised by a GA or PSO.

Usage::

    python tools/evolve_bp_example.py                                   # 5 seeds, prints the table
    python tools/evolve_bp_example.py --seeds 0 1 2 3 4 5 6 7 8 9 --plot curves.png

For each seed: 2000 random points in [-5, 5]^2 (1500 to train, 500 to test), min-max normalised to
[-1, 1]; a 2-5-1 tanh MLP built from ``tinycnn.nn``. "BP" trains it by gradient descent (full-batch Adam,
``--epochs`` steps) from its random initialisation; "GA + BP" and "PSO + BP" first search the 21 weights in
[-3, 3] with a genetic algorithm / particle swarm (30 individuals, 50 generations, fitness = training
MSE) and then run the same BP from the best vector; "U(-3,3)+BP", the control, runs it from one random
vector of the same box, without a search. Reported: the test MSE in the units of y (y ranges
over [0, 50]), mean and standard deviation over the seeds, and the searches' convergence curves.
"""
import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=1000, help="BP steps (full batch)")
    parser.add_argument("--hidden", type=int, default=5)
    parser.add_argument("--population", type=int, default=30)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--plot", default=None, help="write the GA/PSO convergence curves to this PNG")
    args = parser.parse_args(argv)

    from tinycnn import evolve

    started = time.perf_counter()
    results = evolve.bp_comparison(tuple(args.seeds), hidden=args.hidden, epochs=args.epochs,
                                   population=args.population, generations=args.generations)
    print(f"y = x1^2 + x2^2, 2-{args.hidden}-1 tanh MLP, {len(args.seeds)} seeds, {args.epochs} BP steps "
          f"({time.perf_counter() - started:.0f} s)")
    print(f"{'method':<10} {'test MSE mean':>14} {'std':>8} {'median':>8} {'min':>8} {'max':>8}   per seed; after the search: train MSE")
    for name, label in (("bp", "BP"), ("uniform_bp", "U(-3,3)+BP"), ("ga_bp", "GA + BP"), ("pso_bp", "PSO + BP")):
        mse = results[name]["test_mse"]
        search = results[name]["search_mse"]
        extra = "" if search is None else "   " + " ".join(f"{v:.3f}" for v in search)
        print(f"{label:<10} {mse.mean():14.4f} {mse.std():8.4f} {np.median(mse):8.4f} {mse.min():8.4f} {mse.max():8.4f}   "
              + " ".join(f"{v:.4f}" for v in mse) + extra)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3.5))
        for name, colour, label in (("ga_bp", "tab:blue", "GA"), ("pso_bp", "tab:orange", "PSO")):
            for index, curve in enumerate(results[name]["curves"]):
                axis.plot(curve, color=colour, alpha=0.6, label=label if index == 0 else None)
        axis.set_yscale("log")
        axis.set_xlabel("generation / iteration")
        axis.set_ylabel("best training MSE (normalised y)")
        axis.set_title("searching the 21 weights of a 2-5-1 MLP")
        axis.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=100)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
