import pytest

from {{ cookiecutter.package_name }}.config import (
    DEFAULT_METRICS_BASIC_AUTH,
    DEFAULT_METRICS_PATH,
    ConfigError,
    settings_from_environ,
)


def test_defaults():
    settings = settings_from_environ({})

    assert settings["METRICS_PATH"] == DEFAULT_METRICS_PATH
    assert settings["METRICS_BASIC_AUTH"] is DEFAULT_METRICS_BASIC_AUTH
    assert settings["INSTANCE_INDEX"] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), (" True ", True), ("false", False), ("False", False)],
)
def test_metrics_basic_auth_in_any_case(value, expected):
    assert settings_from_environ({"METRICS_BASIC_AUTH": value})["METRICS_BASIC_AUTH"] is expected


def test_empty_metrics_basic_auth_keeps_the_default():
    assert settings_from_environ({"METRICS_BASIC_AUTH": ""}) == settings_from_environ({})


@pytest.mark.parametrize("value", ["yes", "1", "on", "tru"])
def test_metrics_basic_auth_refuses_anything_else(value):
    with pytest.raises(ConfigError, match="METRICS_BASIC_AUTH"):
        settings_from_environ({"METRICS_BASIC_AUTH": value})


@pytest.mark.parametrize("value", ["/metrics", "/internal/metrics", "/_prom.v1"])
def test_metrics_path(value):
    assert settings_from_environ({"PROMETHEUS_METRICS_PATH": value})["METRICS_PATH"] == value


@pytest.mark.parametrize("value", ["metrics", "/", "/metrics/", "//metrics", "/a b", "/m?x=1"])
def test_metrics_path_refuses_what_is_not_a_plain_path(value):
    with pytest.raises(ConfigError, match="PROMETHEUS_METRICS_PATH"):
        settings_from_environ({"PROMETHEUS_METRICS_PATH": value})
