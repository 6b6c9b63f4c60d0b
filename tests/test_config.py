"""Settings: defaults, env vars, flags, and the README's table kept true."""

from pathlib import Path

import pytest

from rlhf_app.config import Settings, load_settings, settings_from_dict, settings_markdown


def test_flags_win_over_env_which_win_over_defaults():
    s = load_settings(["--port", "7000"], env={"RLHF_PORT": "7100", "RLHF_PPO_CLIP_COEF": "0.3"})
    assert s.port == 7000 and s.ppo.clip_coef == 0.3 and s.temperature == Settings().temperature


@pytest.mark.parametrize("raw,value", [("true", True), ("0", False), ("off", False), ("yes", True)])
def test_booleans(raw, value):
    assert load_settings(["--trainer", raw], env={}).trainer is value


@pytest.mark.parametrize("argv", [["--port", "x"], ["--trainer", "maybe"]])
def test_bad_values_stop_with_a_message(argv):
    with pytest.raises(SystemExit, match="Bad value"):
        load_settings(argv, env={})


def test_cross_field_checks():
    with pytest.raises(ValueError, match="algorithm"):
        load_settings(["--algorithm", "dpo"], env={})


def test_prompt_sets_by_name_or_file(tmp_path):
    assert load_settings(["--prompts", "emoji"], env={}).prompts == "emoji"
    with pytest.raises(ValueError, match="Unknown prompt set 'nope'"):
        load_settings(["--prompts", "nope"], env={})
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="has no prompts"):
        load_settings(["--prompts", str(empty)], env={})


def test_round_trip_through_the_dict_saved_with_each_version():
    s = load_settings(["--lora-r", "4", "--grpo.beta", "0.1"], env={})
    assert settings_from_dict(s.to_dict()) == s


def test_readme_lists_every_setting_as_the_code_defines_it():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert settings_markdown() in readme, "README's configuration table is stale: python -m rlhf_app.config"
