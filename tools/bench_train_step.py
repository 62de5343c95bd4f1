"""Time one training step of MobileNet V2 (the default ``tinycnn train`` model) against PyTorch's.

Usage (needs ``pip install ".[reference]"`` and ``pip install --no-deps torchvision==0.28.0``)::

    python tools/bench_train_step.py                       # width 0.5, batch 64, 32 x 32, 10 classes
    python tools/bench_train_step.py --width-mult 1.0 --batch 32 --repeat 20

A step is what the Trainer does per batch: zero the gradients, forward, cross-entropy, backward,
optimizer step (Adam). Both frameworks get the same weights (torchvision's state_dict converted), the
same batch and the same number of threads; the steps alternate in turns of five (``time_interleaved``)
so both see the same background load, and the medians and their ratio are printed. The shapes data is 32 x 32:
MobileNet V2 spends this step on 16 x 16 .. 1 x 1 feature maps, where per-plane overheads dominate.
"""
import argparse
import pathlib
import statistics
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)

    import numba
    import torch
    from model_fixtures import import_torchvision_models

    from tinycnn import losses, optim
    from tinycnn.bench import time_interleaved
    from tinycnn.models import mobilenet_v2

    torch.set_num_threads(numba.get_num_threads())
    models = import_torchvision_models()
    torch.manual_seed(0)
    theirs = models.mobilenet_v2(width_mult=args.width_mult, num_classes=10).train()
    ours = mobilenet_v2(width_mult=args.width_mult, num_classes=10).train()
    ours.load_state_dict({key: value.detach().numpy().copy() for key, value in theirs.state_dict().items()})

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    criterion = losses.CrossEntropyLoss()
    our_optimizer = optim.Adam(ours.parameters(), lr=1e-3)
    their_optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    x_torch, y_torch = torch.from_numpy(x), torch.from_numpy(y)

    def our_step():
        ours.zero_grad()
        criterion(ours(x), y)
        ours.backward(criterion.backward())
        our_optimizer.step()

    def their_step():
        their_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(theirs(x_torch), y_torch).backward()
        their_optimizer.step()

    our_times, their_times = time_interleaved([our_step, their_step], args.repeat)
    ours_ms, theirs_ms = statistics.median(our_times), statistics.median(their_times)
    print(f"MobileNet V2 width {args.width_mult:g}, batch {args.batch} x 3 x {args.size} x {args.size}, 10 classes, "
          f"{numba.get_num_threads()} threads, median of {args.repeat} steps")
    print(f"tinycnn {ours_ms:7.1f} ms/step ({args.batch / ours_ms * 1000:5.0f} images/s)")
    print(f"PyTorch {theirs_ms:7.1f} ms/step ({args.batch / theirs_ms * 1000:5.0f} images/s)")
    print(f"ratio tinycnn / PyTorch: {ours_ms / theirs_ms:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
