"""The generated README documents what the service really reads and does."""

import re

import pytest
import yaml

from .conftest import bake, run

# Keys that metrics.py and logs.py read from each request's WSGI environ, not settings.
WSGI_ENVIRON_KEYS = {"PATH_INFO", "REQUEST_METHOD", "HTTP_X_VCAP_REQUEST_ID", "HTTP_TRACEPARENT"}
CODE_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
# os.environ.get("X"), os.environ["X"], config.py's helpers: _text(environ, "X"), and
# gunicorn.conf.py's: _whole_number("X", ...) and _choice("X", ...).
ENVIRONMENT_READ = re.compile(
    r"""(?:environ\.get\(|environ\[|_\w+\(environ, |_whole_number\(|_choice\()"""
    r"""["']([A-Z][A-Z0-9_]+)"""
)


def code_blocks(readme, language):
    return [body for lang, body in CODE_BLOCK.findall(readme) if lang == language]


@pytest.fixture(params=["basic_auth", "ip_whitelist"])
def project(request, cookies):
    return bake(cookies, metrics_auth=request.param), request.param


def test_every_variable_the_service_reads_is_documented(project):
    path, _ = project
    readme = (path / "README.md").read_text()
    sources = [path / "gunicorn.conf.py", *(path / "payments_api").glob("*.py")]
    variables = {
        name for source in sources for name in ENVIRONMENT_READ.findall(source.read_text())
    }

    assert {"PORT", "WEB_CONCURRENCY", "METRICS_IP_WHITELIST", "VCAP_APPLICATION"} <= variables
    undocumented = {name for name in variables - WSGI_ENVIRON_KEYS if f"`{name}`" not in readme}
    assert undocumented == set()


def test_chosen_protection_comes_first(project):
    path, metrics_auth = project
    readme = (path / "README.md").read_text()
    credentials = readme.index("### Credentials")
    whitelist = readme.index("### IP whitelist")

    assert (credentials < whitelist) == (metrics_auth == "basic_auth")
    assert "the default here" in readme
    assert "\n\n\n" not in readme


def test_yaml_examples_parse(project):
    path, _ = project
    blocks = code_blocks((path / "README.md").read_text(), "yaml")

    assert blocks
    for block in blocks:
        config = yaml.safe_load(block)
        assert config["scrape_configs"][0]["job_name"] == "payments-api"


def test_custom_metric_example_works_as_written(cookies, project_python):
    path = bake(cookies)
    declaration, use = code_blocks((path / "README.md").read_text(), "python")[:2]
    metrics_module = path / "payments_api" / "metrics.py"
    metrics_module.write_text(metrics_module.read_text() + "\n" + declaration)
    increment = use.strip().splitlines()[-1]
    script = (
        "from payments_api import create_app\n"
        "from payments_api.metrics import ORDERS_PLACED\n"
        "app = create_app({'METRICS_BASIC_AUTH': True, 'METRICS_BASIC_AUTH_TOKEN': 't'})\n"
        f"{increment}\n"
        "print(app.test_client().get('/metrics', headers={'Authorization': 'Bearer t'}).text)\n"
    )

    result = run([project_python, "-c", script], cwd=path)

    assert 'orders_placed_total{currency="GBP"} 1.0' in result.stdout
