import ipaddress

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


@pytest.mark.parametrize("value", ["/.", "/..", "/a/../metrics", "/./metrics"])
def test_metrics_path_refuses_dot_segments(value):
    with pytest.raises(ConfigError, match=r"must not have \. or \.\. as a segment"):
        settings_from_environ({"PROMETHEUS_METRICS_PATH": value})


def test_credentials_and_networks_default_to_nothing():
    settings = settings_from_environ({})

    assert settings["CF_APPLICATION_ID"] is None
    assert settings["METRICS_BASIC_AUTH_TOKEN"] is None
    assert settings["METRICS_BASIC_AUTH_USERNAME"] is None
    assert settings["METRICS_IP_WHITELIST"] == ()
    assert ipaddress.ip_network("10.0.0.0/8") in settings["METRICS_TRUSTED_PROXIES"]
    assert ipaddress.ip_network("::1/128") in settings["METRICS_TRUSTED_PROXIES"]


def test_blank_secrets_are_unset():
    settings = settings_from_environ({"METRICS_BASIC_AUTH_TOKEN": "  ", "VCAP_APPLICATION": ""})

    assert settings["METRICS_BASIC_AUTH_TOKEN"] is None
    assert settings["CF_APPLICATION_ID"] is None


def test_application_id_comes_from_vcap_application():
    vcap = '{"application_id": "0f4a1c9e", "application_name": "x"}'

    assert settings_from_environ({"VCAP_APPLICATION": vcap})["CF_APPLICATION_ID"] == "0f4a1c9e"
    assert settings_from_environ({"VCAP_APPLICATION": "{}"})["CF_APPLICATION_ID"] is None
    assert settings_from_environ({"VCAP_APPLICATION": "[1]"})["CF_APPLICATION_ID"] is None


def test_malformed_vcap_application_stops_start_up():
    with pytest.raises(ConfigError, match="VCAP_APPLICATION"):
        settings_from_environ({"VCAP_APPLICATION": "{not json"})


def test_username_without_password_stops_start_up():
    with pytest.raises(ConfigError, match="METRICS_BASIC_AUTH_PASSWORD"):
        settings_from_environ({"METRICS_BASIC_AUTH_USERNAME": "prometheus"})


def test_networks_are_parsed():
    settings = settings_from_environ(
        {"METRICS_IP_WHITELIST": " 203.0.113.7, 198.51.100.0/24 ,2001:db8::/32,"}
    )

    assert settings["METRICS_IP_WHITELIST"] == (
        ipaddress.ip_network("203.0.113.7/32"),
        ipaddress.ip_network("198.51.100.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_ipv4_mapped_entries_read_as_ipv4():
    settings = settings_from_environ(
        {"METRICS_TRUSTED_PROXIES": "::ffff:10.0.0.0/104, ::ffff:0:0/96, ::ffff:1.2.3.4/128"}
    )

    assert settings["METRICS_TRUSTED_PROXIES"] == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("1.2.3.4/32"),
    )


@pytest.mark.parametrize("variable", ["METRICS_IP_WHITELIST", "METRICS_TRUSTED_PROXIES"])
@pytest.mark.parametrize("entry", ["10.0.0.256", "example.com", "10.0.0.0/33", "*"])
def test_malformed_network_names_the_variable_and_entry(variable, entry):
    with pytest.raises(ConfigError, match=rf"{variable} has '{entry}'") as error:
        settings_from_environ({variable: f"10.0.0.1, {entry}"})

    assert "not an IP address or CIDR range" in str(error.value)
