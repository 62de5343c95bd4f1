"""``tinycnn train | evaluate | predict``: help, one-line errors with exit code 2, and a tiny end-to-end run."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import save_image, solid, write_cifar, write_mnist
from tinycnn import cli
from tinycnn.data import make_shapes

TINY = ["--data", "shapes:60", "--width-mult", "0.25", "--image-size", "16", "--epochs", "1", "--batch-size", "16",
        "--quiet"]


def run_tinycnn(*arguments, timeout=180):
    """``python -m tinycnn ARGUMENTS`` in a fresh process (what a user's shell sees)."""
    return subprocess.run([sys.executable, "-m", "tinycnn", *arguments], capture_output=True, text=True,
                          timeout=timeout)


def run_in_process(arguments, capsys):
    """``cli.main(arguments)`` -> (exit code, stdout, stderr); SystemExit is turned into its code."""
    try:
        code = cli.main(arguments)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------ help
@pytest.mark.parametrize("command, options", [
    ("train", ["--model", "--width-mult", "--data", "--epochs", "--batch-size", "--lr", "--optimizer", "--out",
               "--resume", "--weights", "--freeze-backbone", "--quiet"]),
    ("evaluate", ["CHECKPOINT", "--data", "--split", "--json"]),
    ("predict", ["IMAGE", "--checkpoint", "--top"]),
])
def test_every_training_command_has_help_listing_its_options(command, options):
    result = run_tinycnn(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: tinycnn {command}" in result.stdout
    for option in options:
        assert option in result.stdout, option


def test_top_level_help_lists_train_evaluate_predict(capsys):
    code, out, _ = run_in_process(["--help"], capsys)
    assert code == 0
    for command in ("train", "evaluate", "predict"):
        assert command in out


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("arguments, expected", [
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["train", "--lr", "fast"], "argument --lr: expected a positive number, got 'fast'"),
    (["train", "--lr", "nan"], "argument --lr: expected a positive number, got 'nan'"),
    (["train", "--weight-decay", "-1"], "argument --weight-decay: expected a number >= 0, got '-1'"),
    (["train", "--optimizer", "rmsprop"], "--optimizer"),
    (["train", "--val-fraction", "1.5"], "argument --val-fraction: expected a number between 0 and 1, got '1.5'"),
    (["train", "--model", "no_such_net", "--out", "{tmp}/a"], "unknown model"),
    (["train", "--data", "imagenet:/x", "--out", "{tmp}/b"], "unknown dataset spec"),
    (["train", "--data", "folder:{tmp}/missing", "--out", "{tmp}/c"], "not found"),
    (["train", "--data", "shapes:40", "--classes", "ring", "--out", "{tmp}/c1"], "a classifier needs at least two"),
    (["train", "--freeze-backbone", "--out", "{tmp}/d"], "--weights"),
    (["train", "--val-source", "test", "--out", "{tmp}/d1"], "needs a dataset with a test split"),
    (["train", "--model", "squeezenet1_1", "--width-mult", "0.5", "--out", "{tmp}/e"], "no width multiplier"),
    (["train", "--resume", "{tmp}/never_trained"], "nothing to resume"),
    (["train", "--resume", "{tmp}/x", "--lr", "0.1"], "cannot be combined with --resume"),
    (["train", "--no-such-option"], "unrecognized arguments"),
    (["evaluate", "{tmp}/missing.npz"], "missing.npz"),
    (["evaluate", "--split", "test", "{tmp}/x.npz"], "--split"),
    (["predict"], "IMAGE"),
    (["predict", "--checkpoint", "{tmp}/missing.npz", "x.png"], "missing.npz"),
    (["predict", "--top", "0", "x.png"], "--top"),
])
def test_bad_arguments_give_one_line_and_exit_code_2(arguments, expected, tmp_path, capsys):
    arguments = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]
    code, _, err = run_in_process(arguments, capsys)
    line = assert_one_line_error(code, err)
    assert expected in line


def test_bad_argument_in_a_fresh_process_has_no_traceback(tmp_path):
    result = run_tinycnn("train", "--data", f"folder:{tmp_path}/nothing", "--out", str(tmp_path / "run"))
    assert_one_line_error(result.returncode, result.stderr)


# ------------------------------------------------------------------------------------------ end to end
def test_tiny_train_then_evaluate_then_predict(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_in_process(["train", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    assert "best validation accuracy" in stdout and "images/s" in stdout
    for name in ("last.npz", "best.npz", "history.json", "history.csv", "summary.json", "curves.png",
                 "confusion_matrix.png", "filters.png", "feature_maps.png", "embedding_pca.png", "embedding_tsne.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_images"] == 48 and summary["val_images"] == 12     # the 8:2 split of 60

    # a second train into the same folder is refused: it would overwrite the run
    code, _, err = run_in_process(["train", *TINY, "--out", str(out)], capsys)
    assert "already holds a run" in assert_one_line_error(code, err)

    code, stdout, err = run_in_process(["evaluate", str(out / "best.npz"), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["images"] == 12
    assert result["accuracy"] == pytest.approx(summary["best_val_accuracy"], abs=1e-12)
    assert np.sum(result["confusion_matrix"]) == 12

    code, stdout, err = run_in_process(["evaluate", str(out), "--split", "train", "--plot", str(tmp_path / "cm.png")],
                                       capsys)
    assert code == 0, err
    assert "accuracy" in stdout and (tmp_path / "cm.png").is_file()

    from PIL import Image
    images, _ = make_shapes(2, seed=5, image_size=40)
    paths = []
    for index, image in enumerate(images):
        path = tmp_path / f"shape{index}.png"
        Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    code, stdout, err = run_in_process(["predict", "--checkpoint", str(out), "--top", "2", "--json", *paths],
                                       capsys)
    assert code == 0, err
    predictions = json.loads(stdout)
    assert [entry["image"] for entry in predictions] == paths
    for entry in predictions:
        probabilities = [p["probability"] for p in entry["predictions"]]
        assert len(probabilities) == 2 and probabilities[0] >= probabilities[1] and 0 < sum(probabilities) <= 1


def test_resume_of_an_interrupted_run_finishes_it(tmp_path, capsys):
    """A run stopped after epoch 1 of 2 (as Ctrl-C would) continues to epoch 2 with --resume."""
    from tinycnn import io

    out = tmp_path / "run"
    code, _, err = run_in_process(["train", *TINY[:-3], "--epochs", "2", "--quiet", "--no-plots",
                                   "--out", str(out)], capsys)
    assert code == 0, err
    finished = io.load_checkpoint(out / "last.npz")
    # pretend the run stopped after its first epoch: the epoch-1 state is not kept, so make it again
    out2 = tmp_path / "run2"
    from tinycnn import run
    config = run.TrainConfig.from_dict(finished["extra"]["config"])
    trainer, _, _ = run._make_trainer(config.resolved(), out2, progress=False, log=None)
    trainer.epochs = 1
    trainer.fit()
    trainer.epochs = 2
    trainer.save_checkpoint(out2 / "last.npz")
    code, stdout, err = run_in_process(["train", "--resume", str(out2), "--quiet", "--no-plots"], capsys)
    assert code == 0, err
    resumed = io.load_checkpoint(out2 / "last.npz")
    assert resumed["epoch"] == 2
    for key, value in finished["model"].items():
        assert np.array_equal(resumed["model"][key], value), key


def test_default_run_folders_and_latest_run_lookup(tmp_path, monkeypatch, capsys):
    """Without --out, runs go to runs/train, then runs/train-2; evaluate and predict default to the latest."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(["evaluate"], capsys)
    assert "no trained run found in runs/" in assert_one_line_error(code, err)
    code, _, err = run_in_process(["train", "--resume"], capsys)
    assert "no run found in runs/" in assert_one_line_error(code, err)

    for expected in ("train", "train-2"):
        code, stdout, err = run_in_process(["train", *TINY, "--no-plots"], capsys)
        assert code == 0, err
        assert (tmp_path / "runs" / expected / "best.npz").is_file()
        assert f"wrote runs/{expected}/" in stdout
    code, stdout, err = run_in_process(["evaluate"], capsys)
    assert code == 0, err
    assert stdout.startswith("runs/train-2/best.npz: val part of shapes:60, 12 images")


def test_transfer_learning_from_a_saved_run_with_a_frozen_backbone(tmp_path, capsys):
    """The README's recipe: a base run, then 2 new classes from its weights, only the classifier trained."""
    from tinycnn import io

    base = tmp_path / "base"
    code, _, err = run_in_process(["train", *TINY, "--no-plots", "--out", str(base)], capsys)
    assert code == 0, err
    two = tmp_path / "two"
    code, _, err = run_in_process(["train", *TINY, "--no-plots", "--classes", "circle,square", "--weights",
                                   str(base / "best.npz"), "--freeze-backbone", "--out", str(two)], capsys)
    assert code == 0, err
    summary = json.loads((two / "summary.json").read_text())
    assert summary["classes"] == ["circle", "square"]
    assert summary["pretrained"]["replaced"] == ["classifier.1.weight", "classifier.1.bias"]
    base_state = io.load_checkpoint(base / "best.npz")["model"]
    new_state = io.load_checkpoint(two / "last.npz")["model"]
    assert new_state["classifier.1.weight"].shape == (2, base_state["classifier.1.weight"].shape[1])
    for key, value in base_state.items():
        if not key.startswith("classifier."):
            assert np.array_equal(new_state[key], value), key       # frozen, running statistics too


def test_train_on_local_mnist_files_and_on_an_image_folder_then_predict_a_photo(tmp_path, capsys):
    """The README's local-data specs end to end, on files the test writes (nothing is downloaded)."""
    write_mnist(tmp_path / "mnist", "train", 40, gz=True)
    out = tmp_path / "mnist_run"
    code, stdout, err = run_in_process(["train", *TINY, "--no-plots", "--data", f"mnist:{tmp_path / 'mnist'}",
                                        "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == [str(digit) for digit in range(10)]
    assert summary["train_images"] + summary["val_images"] == 40 and summary["augment"] == "crop"

    write_mnist(tmp_path / "mnist", "test", 12, seed=1)                 # t10k-* files: the official test split
    out = tmp_path / "mnist_test_run"
    code, _, err = run_in_process(["train", *TINY, "--no-plots", "--data", f"mnist:{tmp_path / 'mnist'}",
                                   "--val-source", "test", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_images"], summary["val_images"]) == (40, 12)
    code, stdout, err = run_in_process(["evaluate", str(out), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["images"] == 12                        # evaluate rebuilds the same validation set

    colours = {"red": (230, 20, 20), "blue": (20, 20, 230)}
    for name, colour in colours.items():
        for index in range(6):
            save_image(tmp_path / "photos" / name / f"{index}.png", solid(20 + index, 24, colour))
    out = tmp_path / "folder_run"
    code, _, err = run_in_process(["train", *TINY, "--no-plots", "--data", f"folder:{tmp_path / 'photos'}",
                                   "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["blue", "red"] and summary["image_size"] == 16
    code, stdout, err = run_in_process(["predict", "--checkpoint", str(out), "--top", "2",
                                        str(tmp_path / "photos" / "red" / "0.png")], capsys)
    assert code == 0, err
    assert stdout.startswith(f"{tmp_path / 'photos' / 'red' / '0.png'}: ") and "red" in stdout and "blue" in stdout


def test_a_diverging_run_stops_with_one_line_and_exit_code_1(tmp_path, capsys):
    """A learning rate of a billion overflows the weights; the run says so once, without numpy warnings. (A
    million overflowed within two epochs on a 2-core AMD EPYC but not on a Sapphire Rapids, whose BLAS sums
    in another order: the losses reached 1e19-1e21 there, still finite.)"""
    out = tmp_path / "run"
    code, _, err = run_in_process(["train", *TINY, "--epochs", "2", "--optimizer", "sgd", "--lr", "1e9",
                                   "--out", str(out)], capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "RuntimeWarning" not in err, err
    assert "loss became nan" in lines[0] and "training stopped. Try a smaller --lr" in lines[0]


def test_ctrl_c_in_a_fresh_process_saves_a_checkpoint_and_names_the_resume_command(tmp_path):
    """SIGINT (what Ctrl-C sends) to a real ``tinycnn train``: exit code 130, last.npz kept, a hint to resume."""
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "tinycnn", "train", *TINY, "--epochs", "1000", "--no-plots",
                                "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "last.npz").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)                                   # wait for the first epoch's checkpoint
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert f"continue with: tinycnn train --resume {out}" in err
    from tinycnn import io
    saved = io.load_checkpoint(out / "last.npz")
    assert 1 <= saved["epoch"] < 1000


def test_train_on_local_cifar10_batches_with_the_test_batch_as_validation(tmp_path, capsys):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    written = write_cifar(tmp_path / "cifar-10-batches-py", count=8, meta_names=names)   # 5 x 8 training, 8 test
    chosen = [names.index(name) for name in ("cat", "dog", "ship", "truck", "bird")]
    count = {batch: sum(label in chosen for label in labels) for batch, (_, labels) in written.items()}
    out = tmp_path / "run"
    code, _, err = run_in_process(["train", *TINY, "--no-plots", "--data", f"cifar10:{tmp_path}", "--val-source", "test",
                                   "--classes", "cat,dog,ship,truck,bird", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["cat", "dog", "ship", "truck", "bird"] and summary["augment"] == "crop+flip"
    assert summary["val_images"] == count["test_batch"]
    assert summary["train_images"] == sum(count[f"data_batch_{i}"] for i in range(1, 6))
