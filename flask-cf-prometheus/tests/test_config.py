import ipaddress
from pathlib import Path

import pytest

from flask_cf_prometheus._settings import (
    METRICS_PATH_MAX_LENGTH,
    ConfigError,
    check_environ,
    metrics_directory,
    server_settings_from_environ,
    settings_from_environ,
)


def test_defaults():
    settings = settings_from_environ({})

    assert settings["METRICS_PATH"] == "/metrics"
    assert settings["METRICS_BASIC_AUTH"] is True
    assert settings["INSTANCE_INDEX"] is None


@pytest.mark.parametrize("basic_auth", [True, False])
def test_the_services_defaults_hold_until_the_environment_says_otherwise(basic_auth):
    defaults = {"metrics_path": "/internal/metrics", "metrics_basic_auth": basic_auth}

    settings = settings_from_environ({}, **defaults)
    overridden = settings_from_environ(
        {"PROMETHEUS_METRICS_PATH": "/m", "METRICS_BASIC_AUTH": str(not basic_auth)}, **defaults
    )

    assert (settings["METRICS_PATH"], settings["METRICS_BASIC_AUTH"]) == tuple(defaults.values())
    assert (overridden["METRICS_PATH"], overridden["METRICS_BASIC_AUTH"]) == ("/m", not basic_auth)


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
    with pytest.raises(ConfigError) as error:
        settings_from_environ({"METRICS_BASIC_AUTH": value})

    assert (
        str(error.value) == f"METRICS_BASIC_AUTH={value!r} must be one of: true, false (any case)"
    )


@pytest.mark.parametrize("value", ["/metrics", "/internal/metrics", "/_prom.v1"])
def test_metrics_path(value):
    assert settings_from_environ({"PROMETHEUS_METRICS_PATH": value})["METRICS_PATH"] == value


@pytest.mark.parametrize("value", ["metrics", "/", "/metrics/", "//metrics", "/a b", "/m?x=1"])
def test_metrics_path_refuses_what_is_not_a_plain_path(value):
    with pytest.raises(ConfigError, match="PROMETHEUS_METRICS_PATH"):
        settings_from_environ({"PROMETHEUS_METRICS_PATH": value})


def test_metrics_path_has_a_length_gunicorn_can_serve():
    longest = "/" + "m" * (METRICS_PATH_MAX_LENGTH - 1)
    assert settings_from_environ({"PROMETHEUS_METRICS_PATH": longest})["METRICS_PATH"] == longest

    with pytest.raises(ConfigError, match=f"must be at most {METRICS_PATH_MAX_LENGTH} characters"):
        settings_from_environ({"PROMETHEUS_METRICS_PATH": longest + "m"})


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


@pytest.mark.parametrize(
    "value",
    [
        "{not json",
        "{}",
        "[1]",
        '{"application_id": 7}',
        '{"application_id": " "}',
        # A lone surrogate, which no UTF-8 can carry, and JSON nested past Python's
        # recursion limit: each was a traceback (UnicodeEncodeError, RecursionError).
        '{"application_id": "\\ud800"}',
        '{"application_id": "a\\udfffb"}',
        "[" * 100_000 + "]" * 100_000,
        '{"application_id": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
    ids=[
        "not-json",
        "empty",
        "array",
        "number",
        "blank",
        "lone-surrogate",
        "surrogate-within",
        "deep-array",
        "deep-value",
    ],
)
def test_vcap_application_without_an_application_id_stops_start_up(value):
    """Cloud Foundry always sets one: anything else is not what the platform wrote, and a
    credential silently dropped would be a surprise."""
    with pytest.raises(ConfigError, match="VCAP_APPLICATION must be a JSON object"):
        settings_from_environ({"VCAP_APPLICATION": value})


def test_username_without_password_stops_start_up():
    with pytest.raises(ConfigError, match="METRICS_BASIC_AUTH_PASSWORD"):
        settings_from_environ({"METRICS_BASIC_AUTH_USERNAME": "prometheus"})


def test_username_with_a_colon_stops_start_up():
    """Basic auth splits at the first colon: such a username could never log in."""
    with pytest.raises(ConfigError, match="METRICS_BASIC_AUTH_USERNAME must not contain ':'"):
        settings_from_environ(
            {"METRICS_BASIC_AUTH_USERNAME": "a:b", "METRICS_BASIC_AUTH_PASSWORD": "c"}
        )


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
        {"METRICS_TRUSTED_PROXIES": "::ffff:10.0.0.0/104, ::ffff:0:0/96, ::ffff:1.2.3.4"}
    )

    assert settings["METRICS_TRUSTED_PROXIES"] == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("1.2.3.4/32"),
    )


@pytest.mark.parametrize("variable", ["METRICS_IP_WHITELIST", "METRICS_TRUSTED_PROXIES"])
@pytest.mark.parametrize(
    ("entry", "range_"),
    [
        ("::ffff:203.0.113.10/64", "::/64"),
        # Python 3.13 writes a mapped address as ::ffff:203.0.113.0, 3.11 as ::ffff:cb00:7100.
        ("::ffff:203.0.113.10/120", str(ipaddress.ip_network("::ffff:203.0.113.0/120"))),
        ("10.0.0.1/8", "10.0.0.0/8"),
        ("2001:db8::1/32", "2001:db8::/32"),
    ],
)
def test_an_entry_wider_than_it_says_is_refused(variable, entry, range_):
    """`::ffff:203.0.113.10/64` would let in `::5` and not 203.0.113.10: never widen."""
    with pytest.raises(ConfigError) as error:
        settings_from_environ({variable: f"127.0.0.1, {entry}"})

    assert str(error.value) == (
        f"{variable} has {entry!r}, whose address has bits set past its"
        f" /{entry.partition('/')[2]}: write {range_} for the whole range, or the address alone"
    )


def test_trusted_proxies_blank_is_the_default_and_none_is_none():
    default = settings_from_environ({})["METRICS_TRUSTED_PROXIES"]

    assert settings_from_environ({"METRICS_TRUSTED_PROXIES": " "})["METRICS_TRUSTED_PROXIES"] == (
        default
    )
    assert (
        settings_from_environ({"METRICS_TRUSTED_PROXIES": "None"})["METRICS_TRUSTED_PROXIES"] == ()
    )


@pytest.mark.parametrize("variable", ["METRICS_IP_WHITELIST", "METRICS_TRUSTED_PROXIES"])
@pytest.mark.parametrize("entry", ["10.0.0.256", "example.com", "10.0.0.0/33", "*"])
def test_malformed_network_names_the_variable_and_entry(variable, entry):
    with pytest.raises(ConfigError, match=rf"{variable} has '{entry}'") as error:
        settings_from_environ({variable: f"10.0.0.1, {entry}"})

    assert "not an IP address or CIDR range" in str(error.value)


def test_server_defaults():
    assert server_settings_from_environ({}) == {
        "port": 8000,
        "workers": 2,
        "threads": 1,
        "timeout": 30,
        "graceful_timeout": 8,
        "keepalive": 5,
        "max_requests": 0,
        "max_requests_jitter": 0,
        "log_format": "json",
        "metrics_directory": None,
    }


WHOLE_NUMBERS = {
    "PORT": (1, 65535),
    "WEB_CONCURRENCY": (1, 64),
    "GUNICORN_THREADS": (1, 256),
    "GUNICORN_TIMEOUT": (1, 3600),
    "GUNICORN_GRACEFUL_TIMEOUT": (1, 3600),
    "GUNICORN_KEEPALIVE": (1, 3600),
    "GUNICORN_MAX_REQUESTS": (0, 100_000_000),
    "GUNICORN_MAX_REQUESTS_JITTER": (0, 100_000_000),
    "CF_INSTANCE_INDEX": (0, 9999),
}


@pytest.mark.parametrize("variable", WHOLE_NUMBERS)
def test_whole_numbers_take_their_bounds(variable):
    low, high = WHOLE_NUMBERS[variable]

    for good in (low, high):
        check_environ({variable: str(good)})


@pytest.mark.parametrize("variable", WHOLE_NUMBERS)
@pytest.mark.parametrize(
    "value", ["-1", "nan", "3.0", "0x10", "1e3", "+5", "٣", "99999999999999999999", "below"]
)
def test_whole_numbers_refuse_anything_else(variable, value):
    low, high = WHOLE_NUMBERS[variable]
    if value == "below":
        value = str(low - 1)

    with pytest.raises(ConfigError) as error:
        check_environ({variable: value})

    assert str(error.value) == f"{variable}={value!r} must be a whole number from {low} to {high}"


@pytest.mark.parametrize("variable", WHOLE_NUMBERS)
def test_a_number_past_pythons_conversion_limit_is_one_line(variable):
    """int() refuses more than 4,300 digits with a ValueError: never a traceback."""
    low, high = WHOLE_NUMBERS[variable]

    with pytest.raises(ConfigError) as error:
        check_environ({variable: "9" * 5000})

    assert str(error.value) == (
        f"{variable}={'9' * 40!r}... must be a whole number from {low} to {high}"
    )
    assert check_environ({variable: "0" * 5000 + str(high)}) is not None, "leading zeros"


def test_a_zone_in_an_address_is_refused_saying_to_leave_it_out():
    with pytest.raises(ConfigError) as error:
        settings_from_environ({"METRICS_IP_WHITELIST": "fe80::1%eth0"})

    assert str(error.value) == (
        "METRICS_IP_WHITELIST has 'fe80::1%eth0', with a zone (%eth0): clients' addresses"
        " carry none, so write the address without it"
    )


@pytest.mark.parametrize("variable", [*WHOLE_NUMBERS, "LOG_FORMAT", "METRICS_BASIC_AUTH"])
@pytest.mark.parametrize("value", ["", "  ", "\t"])
def test_blank_is_the_default(variable, value):
    check_environ({variable: value})


@pytest.mark.parametrize(("value", "expected"), [("", None), ("  ", None), ("metrics", "metrics")])
def test_a_blank_metrics_directory_is_unset(value, expected):
    directory = metrics_directory({"PROMETHEUS_MULTIPROC_DIR": value})

    assert directory == (None if expected is None else Path(expected))
