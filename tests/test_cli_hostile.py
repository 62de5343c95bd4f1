"""Issue 12 "done when": every CLI command, given hostile arguments, answers with one line -- no traceback.

Each case runs ``tinycnn.cli.main`` in-process (fast; an exception escaping ``main`` fails the test with
its traceback) and asserts: exit code 1 or 2, "Traceback" in neither stdout nor stderr, stderr one line
naming the command. A few cases also run as a real subprocess, and ``--debug`` brings the traceback back.
"""
import struct
import subprocess
import sys

import numpy as np
import pytest

from tinycnn import cli


def _idx(path, magic, shape, dtype=np.uint8):
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in shape))


@pytest.fixture
def hostile_files(tmp_path):
    """Files a careless student or an adversary would pass: empty, garbage, a folder, 0-image MNIST."""
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "folder").mkdir()
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    _idx(mnist / "train-images-idx3-ubyte", 0x803, (0, 28, 28))
    _idx(mnist / "train-labels-idx1-ubyte", 0x801, (0,))
    return tmp_path


def hostile_cases(root):
    """(argv, allowed exit codes) per command; the commands are read from the parser itself."""
    generic = [["--no-such-option"], ["--top", "inf"], ["--batch", "1e308"], ["--resolution", "-1"]]
    specific = {
        "summary": [["mobilenet_v22"], ["mobilenet_v2", "--width-mult", "inf"],
                    ["mobilenet_v2", "--width-mult", "1e308"], ["mobilenet_v2", "--width-mult", "nan"],
                    ["mobilenet_v2", "--resolution", "100000000000"], ["mobilenet_v2", "--batch", "0"],
                    ["mobilenet_v2", "--width-mult", "1000"]],
        "train": [["--seed", "-1"], ["--data", "shapes:100000000", "--out", str(root / "r1")],
                  ["--data", f"mnist:{root / 'mnist'}", "--out", str(root / "r2")],
                  ["--data", f"folder:{root / 'folder'}", "--out", str(root / "r3")],
                  ["--data", "nonsense:1"], ["--image-size", "100000", "--out", str(root / "r4")],
                  ["--model", "mobilenet_v22"], ["--resume", str(root / "folder")], ["--epochs", "inf"],
                  ["--lr", "nan"], ["--width-mult", "1e308"]],
        "evaluate": [[str(root / "empty.npz")], [str(root / "missing.npz")], [str(root / "folder")], [],
                     [str(root / "garbage.png"), "--batch-size", "1e308"]],
        "predict": [[str(root / "folder"), "--checkpoint", str(root / "empty.npz")],
                    [str(root / "garbage.png"), "--checkpoint", str(root / "empty.npz")], ["--top", "0", "x.png"]],
        "bench": [["kernels", "--repeat", "inf"], ["kernels", "no_such_workload"], ["nothing"]],
    }
    commands = sorted(cli.build_parser()._subparsers._group_actions[0].choices)
    for command in commands:
        for arguments in generic + specific.get(command, []):
            yield [command, *arguments]


def _run_main(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_answers_hostile_arguments_with_one_line_and_no_traceback(hostile_files, capsys,
                                                                                  monkeypatch):
    monkeypatch.chdir(hostile_files)            # 'runs/' (the default) is the empty temporary folder
    checked = 0
    for argv in hostile_cases(hostile_files):
        code, out, err = _run_main(argv, capsys)
        context = f"tinycnn {' '.join(argv)} -> exit {code}\nstdout: {out[-500:]}\nstderr: {err}"
        assert code in (1, 2), context
        assert "Traceback" not in out + err, context
        assert len(err.strip().splitlines()) == 1 and f"tinycnn {argv[0]}" in err, context
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize("argv, code, message", [
    (["summary", "mobilenet_v2", "--width-mult", "inf"], 2, "argument --width-mult: expected a positive number"),
    (["train", "--seed", "-1"], 2, "argument --seed: expected a non-negative integer, got '-1'"),
    (["summary", "mobilenet_v22"], 2, "did you mean 'mobilenet_v2'"),
    (["train", "--data", "shapes:100000000"], 2, "needs 1228.8 GB of memory, but only"),
    (["train", "--data", "shapes:2"], 2, "too"),
])
def test_probes_of_the_issue_give_the_named_message_and_exit_code(argv, code, message, capsys, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    got, out, err = _run_main(argv, capsys)
    assert got == code and message in err, err


def test_an_unexpected_error_is_one_line_exit_1_and_debug_shows_the_traceback(monkeypatch, tmp_path):
    """A failure during the run (here: a bug simulated in the summary command) is exit 1, one line."""
    script = ("import sys, tinycnn.cli as c\n"
              "def boom(args): raise ZeroDivisionError('division by zero')\n"
              "c._run_summary = boom\n"
              "parser_builder = c._add_summary_parser\n"
              "def add(sub):\n"
              "    parser_builder(sub); sub.choices['summary'].set_defaults(handler=boom)\n"
              "c.COMMANDS[c.COMMANDS.index(parser_builder)] = add\n"
              "sys.exit(c.main(sys.argv[1:]))\n")
    plain = subprocess.run([sys.executable, "-c", script, "summary", "mobilenet_v2"], capture_output=True,
                           text=True, timeout=120)
    assert plain.returncode == 1
    assert plain.stderr.strip() == ("tinycnn summary: error: ZeroDivisionError: division by zero "
                                    "(run again with --debug for the traceback)")
    debug = subprocess.run([sys.executable, "-c", script, "summary", "mobilenet_v2", "--debug"],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ZeroDivisionError" in debug.stderr
