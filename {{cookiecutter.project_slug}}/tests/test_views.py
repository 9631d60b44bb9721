import pytest

from {{ cookiecutter.package_name }} import __version__


def test_index_says_which_service_answered(client):
    response = client.get("/")

    assert response.status_code == 200
    assert response.json == {
        "service": {{ cookiecutter.project_slug | tojson }},
        "version": __version__,
        "instance": None,
    }


def test_index_names_the_cloud_foundry_instance(app):
    app.config["INSTANCE_INDEX"] = 3

    assert app.test_client().get("/").json["instance"] == 3


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/_status", 200, {"status": "ok"}),
        ("GET", "/no/such/page", 404, {"error": "Not Found"}),
        ("POST", "/_status", 405, {"error": "Method Not Allowed"}),
    ],
    ids=["health-check", "unknown-path", "wrong-method"],
)
def test_answers_are_json(client, method, path, status, body):
    response = client.open(path, method=method)

    assert response.status_code == status
    assert response.json == body


def test_405_keeps_its_allow_header(client):
    response = client.delete("/")

    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
