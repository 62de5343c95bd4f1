"""README.md and CI agree: the two set-up commands a newcomer copies are the ones CI runs."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ci_command(name):
    script = (ROOT / ".ci" / "run").read_text()
    match = re.search(rf"^{name}='(.+)'$", script, flags=re.MULTILINE)
    assert match, f".ci/run must define {name}='...'"
    return match.group(1)


def _readme_commands():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), "each set-up command is one line to copy"


def test_ci_runs_the_readme_test_command():
    main_job, test_command = _readme_commands()
    assert test_command == _ci_command("TEST_COMMAND")
    assert "pip install -e \".[test]\"" in test_command and "pytest" in test_command


def test_readme_main_job_is_the_default_training_run_that_ci_checks():
    main_job, _ = _readme_commands()
    assert main_job == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && tinycnn train"
    assert main_job == _ci_command("MAIN_JOB")      # CI runs it and checks its >= 90% accuracy
