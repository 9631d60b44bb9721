import tomllib

import pytest

from local_extensions import toml_string


@pytest.fixture
def render():
    from jinja2 import Environment

    environment = Environment(extensions=[toml_string])
    return lambda value: environment.from_string("{{ value | toml_string }}").render(value=value)


@pytest.mark.parametrize(
    "value",
    [
        "Payments API",
        'Zoë\'s "Quote" \\ \'\'\' """',
        "rocket 🚀 and 東京",
        "".join(chr(code) for code in range(0x20)) + "\x7f",
        "",
    ],
    ids=["plain", "quotes-and-backslashes", "astral-and-cjk", "control-characters", "empty"],
)
def test_toml_string_round_trips(render, value):
    assert tomllib.loads(f"key = {render(value)}")["key"] == value


def test_toml_string_keeps_non_ascii_readable(render):
    assert render("Zoë 🚀") == '"Zoë 🚀"'
