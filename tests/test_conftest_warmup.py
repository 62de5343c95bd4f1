"""The suite's warm-up process (tests/conftest.py): when it starts, what it runs, and that it is stopped."""
import os
import pathlib
import subprocess

import conftest


class _Item:
    """What the hooks read of a collected pytest item: its file."""

    def __init__(self, name):
        self.path = pathlib.Path(conftest.TESTS_DIR) / name


class _Session:
    """What the hooks read of a pytest session: its items and whether it only collects."""

    def __init__(self, names, collect_only=False):
        self.items = [_Item(name) for name in names]
        self.config = type("Config", (), {"option": type("Options", (), {"collectonly": collect_only})()})()


def _cold_two_core_machine(monkeypatch):
    monkeypatch.delenv(conftest.WARMUP_SWITCH, raising=False)
    monkeypatch.delenv(conftest._WARMUP_CHILD, raising=False)
    monkeypatch.setattr(conftest, "compiled_on_this_machine", lambda *dispatchers: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


def test_warm_up_only_for_a_cold_cache_a_run_with_the_kernel_tests_and_a_second_core(monkeypatch):
    _cold_two_core_machine(monkeypatch)
    everything = _Session(conftest.WARMUP_FILES + ("test_cli.py",)).items
    assert conftest._should_warm_up(everything)
    assert not conftest._should_warm_up(_Session(("test_depthwise.py", "test_cli.py")).items)   # one kernel file
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert not conftest._should_warm_up(everything)                   # one core: nothing to compile on
    _cold_two_core_machine(monkeypatch)
    monkeypatch.setattr(conftest, "compiled_on_this_machine", lambda *dispatchers: True)
    assert not conftest._should_warm_up(everything)                   # the kernels are on disk already
    _cold_two_core_machine(monkeypatch)
    monkeypatch.setenv(conftest.WARMUP_SWITCH, "0")
    assert not conftest._should_warm_up(everything)                   # turned off
    _cold_two_core_machine(monkeypatch)
    monkeypatch.setenv(conftest._WARMUP_CHILD, "1")
    assert not conftest._should_warm_up(everything)                   # the warm-up process starts no other


def test_the_warm_up_process_runs_its_tests_backwards_and_the_suite_forwards(monkeypatch):
    monkeypatch.delenv(conftest._WARMUP_CHILD, raising=False)
    items = ["first", "second", "third"]
    conftest.pytest_collection_modifyitems(None, None, items)
    assert items == ["first", "second", "third"]
    monkeypatch.setenv(conftest._WARMUP_CHILD, "1")
    conftest.pytest_collection_modifyitems(None, None, items)
    assert items == ["third", "second", "first"]


class _FakeProcess:
    started = []

    def __init__(self, command, **options):
        self.command, self.options, self.stopped = command, options, False
        _FakeProcess.started.append(self)

    def poll(self):
        return 0 if self.stopped else None

    def terminate(self):
        self.stopped = True

    def wait(self, timeout=None):
        return 0


def test_collection_starts_the_process_on_the_kernel_tests_and_the_session_end_stops_it(monkeypatch):
    _cold_two_core_machine(monkeypatch)
    monkeypatch.setattr(conftest, "_warmup", None)
    monkeypatch.setattr(subprocess, "Popen", _FakeProcess)
    _FakeProcess.started.clear()
    session = _Session(conftest.WARMUP_FILES)
    conftest.pytest_collection_finish(session)
    [process] = _FakeProcess.started
    command, options = process.command, process.options
    assert command[1:3] == ["-m", "pytest"]
    assert [pathlib.Path(argument).name for argument in command[-3:]] == list(conftest.WARMUP_FILES)
    temporary = pathlib.Path(command[command.index("--basetemp") + 1])
    assert temporary.is_dir()
    assert options["env"][conftest._WARMUP_CHILD] == str(os.getpid())     # the process watches this one
    assert options["stdout"] is subprocess.DEVNULL and options["stderr"] is subprocess.DEVNULL
    conftest.pytest_sessionfinish(session, 0)
    assert process.stopped and not temporary.exists()


def test_no_process_and_nothing_to_stop_on_a_warm_cache_or_when_only_collecting(monkeypatch):
    _cold_two_core_machine(monkeypatch)
    monkeypatch.setattr(conftest, "_warmup", None)
    monkeypatch.setattr(subprocess, "Popen", _FakeProcess)
    _FakeProcess.started.clear()
    conftest.pytest_collection_finish(_Session(conftest.WARMUP_FILES, collect_only=True))      # --collect-only
    monkeypatch.setattr(conftest, "compiled_on_this_machine", lambda *dispatchers: True)
    conftest.pytest_collection_finish(_Session(conftest.WARMUP_FILES))
    conftest.pytest_sessionfinish(None, 0)
    assert _FakeProcess.started == []
