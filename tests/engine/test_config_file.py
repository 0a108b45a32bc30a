"""Recording model folders in the user's TOML config through tomlkit: the key changes, nothing else does."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest

from kvlock.loading.config_file import ConfigError, set_top_level_array, write_array

CONFIG = """# my settings
token_file = "~/.kvlock/token"  # where the token lives
model_dirs = [ # recorded by kvlock models add
  "/models/wan",  # the big one
]

[server]
port = 50052
"""


def test_a_new_folder_is_appended_and_every_comment_stays():
    text = set_top_level_array(CONFIG, "model_dirs", ["/models/wan", "/models/ltx"])
    assert "# recorded by kvlock models add" in text and '"/models/wan",  # the big one' in text
    assert text.startswith('# my settings\ntoken_file = "~/.kvlock/token"  # where the token lives\n')
    assert text.endswith("[server]\nport = 50052\n")
    data = tomllib.loads(text)
    assert data["model_dirs"] == ["/models/wan", "/models/ltx"] and data["server"] == {"port": 50052}


def test_a_missing_key_goes_before_the_first_table_so_it_stays_top_level():
    text = set_top_level_array('token_file = "t"\n\n[server]\nport = 1\n', "model_dirs", ['/a "quoted" dir'])
    data = tomllib.loads(text)
    assert data["model_dirs"] == ['/a "quoted" dir'] and data["server"] == {"port": 1}
    assert text.index("model_dirs") < text.index("[server]")
    assert tomllib.loads(set_top_level_array("", "model_dirs", ["/x"])) == {"model_dirs": ["/x"]}


def test_a_changed_list_is_replaced_in_place():
    text = set_top_level_array(CONFIG, "model_dirs", ["/elsewhere"])
    assert tomllib.loads(text)["model_dirs"] == ["/elsewhere"]
    assert text.index("token_file") < text.index("model_dirs") < text.index("[server]")


@pytest.mark.parametrize("text", ['model_dirs = "/one"\n', "[model_dirs]\na = 1\n", "model_dirs = [\n"])
def test_what_cannot_be_edited_safely_is_refused_and_the_file_kept(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        write_array(path, "model_dirs", ["/x"])
    assert path.read_text() == text and [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_write_array_keeps_the_files_mode_and_creates_a_missing_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    os.chmod(path, 0o600)
    write_array(path, "model_dirs", ["/models/wan", "/models/ltx"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "# the big one" in path.read_text()
    fresh = tmp_path / "sub" / "config.toml"
    write_array(fresh, "model_dirs", ["/m"])
    assert tomllib.loads(fresh.read_text()) == {"model_dirs": ["/m"]}
