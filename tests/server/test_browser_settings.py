"""The `host_whitelist` and `cors` settings (issue 17): read from a flag, the environment or
the TOML file (a comma-separated string or an array), normalized, a bad entry refused in
one line naming the setting and its source, and `raftkv config show` reading back."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.server.settings import SettingsInvalid, load_settings, render_settings


def test_host_whitelist_and_cors_default_to_empty() -> None:
    settings = load_settings({}, environ={})
    assert (settings.host_whitelist, settings.cors) == ((), ())


def test_they_read_from_a_flag_the_environment_or_the_file(tmp_path: Path) -> None:
    flags = {"host_whitelist": "KV.example, 10.0.0.0/8,[::1]", "cors": "http://App.example:80"}
    settings = load_settings(flags, environ={})
    assert settings.host_whitelist == ("kv.example", "10.0.0.0/8", "::1")
    assert settings.cors == ("http://app.example",)
    environ = {"RAFTKV_HOST_WHITELIST": "*", "RAFTKV_CORS": "https://a.example:8443,*"}
    settings = load_settings({}, environ=environ)
    assert (settings.host_whitelist, settings.cors) == (("*",), ("https://a.example:8443", "*"))
    file = tmp_path / "raftkv.toml"
    file.write_text('host_whitelist = ["kv.example", "127.0.0.1"]\ncors = "http://a.example"\n')
    settings = load_settings({}, environ={}, config_file=file)
    assert settings.host_whitelist == ("kv.example", "127.0.0.1")
    assert settings.cors == ("http://a.example",)


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"host_whitelist": "evil example"}, {}, "setting host_whitelist (from flag --host-whitel"),
        ({"host_whitelist": "http://kv.example"}, {}, "setting host_whitelist (from flag"),
        ({}, {"RAFTKV_HOST_WHITELIST": "10.0.0.0/99"}, "(from environment variable RAFTKV_HOST_"),
        ({"cors": "app.example"}, {}, "setting cors (from flag --cors): 'app.example' is not an "),
        ({}, {"RAFTKV_CORS": "http://a.example/ui"}, "(from environment variable RAFTKV_CORS)"),
        ({"cors": "ftp://a.example"}, {}, "expected http(s)://host[:port]"),
    ],
)
def test_a_bad_entry_is_refused_in_one_line_naming_the_setting(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsInvalid) as caught:
        load_settings(flags, environ=environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_file_entry_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "raftkv.toml"
    file.write_text("cors = [1, 2]\n")
    with pytest.raises(SettingsInvalid, match=r"setting cors .*a list of strings"):
        load_settings({}, environ={}, config_file=file)


def test_rendered_lists_read_back(tmp_path: Path) -> None:
    settings = load_settings(
        {"host_whitelist": "kv.example,::1", "cors": "http://a.example:3000"}, environ={}
    )
    shown = render_settings(settings)
    assert 'host_whitelist = ["kv.example", "::1"]' in shown
    path = tmp_path / "shown.toml"
    path.write_text(shown)
    assert load_settings({}, environ={}, config_file=path) == settings
    empty = tmp_path / "empty.toml"
    empty.write_text(render_settings(load_settings({}, environ={})))
    assert load_settings({}, environ={}, config_file=empty).cors == ()
