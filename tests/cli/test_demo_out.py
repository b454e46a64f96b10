"""`darm demo` decides where its results go before any training: an output directory that holds another world's
demo results is refused when named, and the default one is left alone (this world's results go beside it)."""

import json

import pytest

from latent_darm.cli.demo import choose_out_dir
from latent_darm.errors import ConfigError


def _earlier_run(directory, fingerprint):
    directory.mkdir(parents=True)
    (directory / "demo.json").write_text(json.dumps({"fingerprint": fingerprint}))
    return directory


def test_the_same_world_or_an_empty_directory_is_used_as_it_is(tmp_path):
    logged = []
    assert choose_out_dir(None, tmp_path / "new", "abc", logged.append) == tmp_path / "new"
    same = _earlier_run(tmp_path / "same", "abc")
    assert choose_out_dir(same, tmp_path / "default", "abc", logged.append) == same
    assert choose_out_dir(None, same, "abc", logged.append) == same
    assert logged == []


def test_another_worlds_default_directory_is_kept_and_this_world_writes_beside_it(tmp_path):
    default = _earlier_run(tmp_path / "darm-demo-seed0", "old0123")
    logged = []
    chosen = choose_out_dir(None, default, "new4567", logged.append)
    assert chosen == tmp_path / "darm-demo-seed0-new4567"
    assert len(logged) == 1 and "old0123" in logged[0] and str(chosen) in logged[0]
    assert json.loads((default / "demo.json").read_text())["fingerprint"] == "old0123"  # untouched


def test_another_worlds_directory_named_with_out_is_refused_before_training(tmp_path):
    named = _earlier_run(tmp_path / "mine", "old0123")
    with pytest.raises(ConfigError, match=r"--out .*mine holds the demo results of another world \(fingerprint old"):
        choose_out_dir(named, tmp_path / "default", "new4567", lambda _: None)
