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
    app.config["INSTANCE_INDEX"] = "3"

    assert app.test_client().get("/").json["instance"] == "3"


def test_health_check(client):
    response = client.get("/_status")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_unknown_path_is_a_json_404(client):
    response = client.get("/no/such/page")

    assert response.status_code == 404
    assert response.json == {"error": "Not Found"}


def test_wrong_method_is_a_json_405(client):
    response = client.post("/_status")

    assert response.status_code == 405
    assert response.json == {"error": "Method Not Allowed"}


def test_405_keeps_its_allow_header(client):
    response = client.delete("/")

    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
