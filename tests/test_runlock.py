"""Issue 12 item 1: a run owns its folder (tinycnn.runlock) -- a second run into it refuses, exit 2."""
import json
import os
import subprocess
import sys
import time

import pytest

from tinycnn import run
from tinycnn.runlock import LOCK_FILE, RunFolderBusy, RunLock

HOLD_LOCK = """
import sys, time
from tinycnn.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path/run's lock (as a running 'tinycnn train' does)."""
    folder = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True,
                               cwd=os.getcwd())
    assert process.stdout.readline().strip() == "locked"
    yield folder, process
    process.kill()
    process.wait()


def test_a_second_lock_on_a_held_folder_is_refused_naming_folder_and_holder(holder):
    folder, process = holder
    with pytest.raises(RunFolderBusy, match=rf"{folder} is in use by another run \(pid {process.pid} on "):
        RunLock(folder).acquire()


def test_train_into_a_folder_held_by_a_running_run_exits_2_and_leaves_it_untouched(holder):
    folder, process = holder
    for extra in ([], ["--resume", str(folder)]):
        if extra:
            (folder / "last.npz").write_bytes(b"the running run's checkpoint")   # resume needs one to exist
        before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
        arguments = ["--out", str(folder), "--data", "shapes:40", "--epochs", "1"] if not extra else extra
        result = subprocess.run([sys.executable, "-m", "tinycnn", "train", *arguments, "--quiet"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert f"is in use by another run (pid {process.pid}" in result.stderr
        assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == before   # untouched


def test_a_lock_left_by_a_killed_run_is_reported_and_taken_over(holder):
    folder, process = holder
    process.kill()                              # SIGKILL: no cleanup, the file stays, the OS drops the flock
    process.wait()
    assert (folder / LOCK_FILE).exists()
    with RunLock(folder) as lock:
        assert f"pid {process.pid}" in lock.note and "no longer runs" in lock.note
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_FILE).exists()     # released on exit


def test_run_training_holds_the_lock_for_the_whole_run_and_refuses_an_existing_run(tmp_path, monkeypatch):
    seen = []
    real_body = run._run_training_locked

    def spy(*args, **kwargs):
        seen.append((tmp_path / LOCK_FILE).exists())
        with pytest.raises(RunFolderBusy):
            RunLock(tmp_path).acquire()          # same process, second descriptor: flock still excludes it
        (tmp_path / "last.npz").write_bytes(b"")
        return "result"

    monkeypatch.setattr(run, "_run_training_locked", spy)
    assert run.run_training(run.TrainConfig(), tmp_path, log=None) == "result"
    assert seen == [True] and not (tmp_path / LOCK_FILE).exists()
    with pytest.raises(ValueError, match="already holds a run"):
        run.run_training(run.TrainConfig(), tmp_path, log=None)
