"""End to end: a small MobileNet-style net learns the procedural shapes dataset with SGD.

Everything is ours: kernels, layers with hand-written backward passes, loss, optimizer, schedule,
dataset. If any gradient were wrong, accuracy would stall far below the threshold (chance is 10%).
"""
import numpy as np

from tinycnn import nn, optim
from tinycnn.data import make_shapes
from tinycnn.losses import CrossEntropyLoss


def _separable(in_ch, out_ch, stride):
    """MobileNet V1 depthwise-separable block: dw3x3-BN-ReLU6, pw1x1-BN-ReLU6."""
    return [nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False), nn.BatchNorm2d(in_ch), nn.ReLU6(),
            nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU6()]


def _small_mobilenet():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),   # (N,16,16,16)
        *_separable(16, 32, 1),                                                  # (N,32,16,16)
        *_separable(32, 64, 2),                                                  # (N,64,8,8)
        *_separable(64, 64, 2),                                                  # (N,64,4,4)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))                # (N,10)


def _accuracy(model, x, y, batch=200):
    model.eval()
    predictions = np.concatenate([model(x[i:i + batch]).argmax(axis=1) for i in range(0, len(x), batch)])
    return float(np.mean(predictions == y))


def test_small_mobilenet_learns_shapes_to_90_percent_held_out():
    nn.init.manual_seed(0)
    model = _small_mobilenet()
    x_train, y_train = make_shapes(3000, seed=1)
    x_test, y_test = make_shapes(600, seed=2)                 # held out: a different seed
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    epochs, batch = 8, 64
    steps_per_epoch = len(x_train) // batch
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = optim.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    criterion = CrossEntropyLoss()
    rng = np.random.default_rng(0)
    first_epoch_loss = None
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x_train))
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            model.zero_grad()
            loss = criterion(model(x_train[idx]), y_train[idx])
            model.backward(criterion.backward())
            optimizer.step()
            schedule.step()
            losses.append(loss)
        first_epoch_loss = first_epoch_loss or np.mean(losses)
    assert np.mean(losses) < 0.5 * first_epoch_loss
    assert _accuracy(model, x_test, y_test) >= 0.90
