"""Settings come from the environment and a .env file, read the way people expect."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def read_settings(names, env=None, dotenv: str | None = None, tmp_path=None):
    """The values of settings `names` in a fresh process (settings are read at start-up)."""
    environ = {k: v for k, v in os.environ.items() if k not in names and k != "DJANGO_SETTINGS_MODULE"}
    environ.update(env or {})
    if dotenv is not None:
        path = tmp_path / "studio.env"
        path.write_text(dotenv)
        environ["STUDIO_DOTENV"] = str(path)
    else:
        environ["STUDIO_IGNORE_DOTENV"] = "1"
    code = f"import json, studio.settings as s; print(json.dumps({{n: getattr(s, n) for n in {names!r}}}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True)
    return done


def test_dotenv_comments_quotes_and_export_behave_as_expected(tmp_path):
    import json

    dotenv = (
        "# provider keys\n"
        "PICTORY_API_KEY=pictai_abc  # my test key\n"
        'OPENROUTER_API_KEY="sk-or-with # hash inside"\n'
        "export PUBLIC_BASE_URL='https://studio.example.com'\n"
    )
    done = read_settings(
        ["PICTORY_API_KEY", "OPENROUTER_API_KEY", "PUBLIC_BASE_URL"], dotenv=dotenv, tmp_path=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "PICTORY_API_KEY": "pictai_abc",
        "OPENROUTER_API_KEY": "sk-or-with # hash inside",
        "PUBLIC_BASE_URL": "https://studio.example.com",
    }


def test_the_real_environment_wins_over_dotenv(tmp_path):
    import json

    done = read_settings(
        ["PICTORY_API_KEY"],
        env={"PICTORY_API_KEY": "pictai_env"},
        dotenv="PICTORY_API_KEY=pictai_file\n",
        tmp_path=tmp_path,
    )
    assert json.loads(done.stdout) == {"PICTORY_API_KEY": "pictai_env"}


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_studio_ignore_dotenv_takes_any_true_word(tmp_path, value):
    import json

    done = read_settings(
        ["PICTORY_API_KEY"],
        env={"STUDIO_IGNORE_DOTENV": value},
        dotenv="PICTORY_API_KEY=pictai_file\n",
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"PICTORY_API_KEY": ""}


def test_studio_ignore_dotenv_refuses_a_word_that_is_not_a_boolean(tmp_path):
    done = read_settings(
        ["PICTORY_API_KEY"], env={"STUDIO_IGNORE_DOTENV": "please"}, dotenv="", tmp_path=tmp_path
    )
    assert done.returncode != 0
    assert "STUDIO_IGNORE_DOTENV must be true or false" in done.stderr and "'please'" in done.stderr


@pytest.mark.parametrize(
    "value,expected",
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("", True),
    ],
)
def test_booleans_take_true_false_1_0_yes_no(value, expected):
    import json

    done = read_settings(["SIMULATOR_ENABLED"], env={"SIMULATOR_ENABLED": value})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"SIMULATOR_ENABLED": expected}


@pytest.mark.parametrize("value", ["treu", "on", "enabled", "2"])
def test_any_other_boolean_stops_start_up_naming_the_variable(value):
    done = read_settings(["SIMULATOR_ENABLED"], env={"SIMULATOR_ENABLED": value})
    assert done.returncode != 0
    assert "SIMULATOR_ENABLED must be true or false" in done.stderr and repr(value) in done.stderr


def test_a_number_that_is_not_one_stops_start_up_naming_the_variable():
    done = read_settings(["CLIP_DEADLINE_MINUTES"], env={"CLIP_DEADLINE_MINUTES": "ten"})
    assert done.returncode != 0 and "CLIP_DEADLINE_MINUTES must be a number" in done.stderr


def test_the_simulator_renders_480_lines_unless_told_and_refuses_a_height_it_cannot_encode():
    import json

    done = read_settings(["SIMULATOR_HEIGHT"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"SIMULATOR_HEIGHT": 480}
    for value in ("481", "100"):  # H.264 needs an even height; under 144 the caption is unreadable
        done = read_settings(["SIMULATOR_HEIGHT"], env={"SIMULATOR_HEIGHT": value})
        assert done.returncode != 0
        assert "SIMULATOR_HEIGHT must be an even number of lines from 144 to 1080" in done.stderr
