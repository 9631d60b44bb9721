import gzip
import platform
import uuid

import pytest
from prometheus_client import REGISTRY, Histogram
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.process_collector import ProcessCollector

from flask_cf_prometheus import ConfigError, observe
from flask_cf_prometheus import _metrics as metrics
from flask_cf_prometheus import _workers as worker_records

from .service import VERSION, create_app

METRICS_PATH = "/metrics"
TOKEN = "scrape-token"


@pytest.fixture
def app():
    """An app with routes that show what the metrics record; not in testing mode, so an
    exception becomes a 500 response as in production."""
    app = create_app(
        {
            "METRICS_PATH": METRICS_PATH,
            "METRICS_BASIC_AUTH": True,
            "METRICS_BASIC_AUTH_TOKEN": TOKEN,
        }
    )

    @app.get("/items/<int:item_id>")
    def item(item_id):
        return {"id": item_id}

    @app.get("/boom")
    def boom():
        raise ValueError("broken on purpose")

    @app.get("/in-progress")
    def in_progress():
        return {"value": sample("http_server_requests_in_progress")}

    return app


def scrape(client, path=METRICS_PATH, environ_overrides=None, **headers):
    return client.get(
        path,
        headers={"Authorization": f"Bearer {TOKEN}", **headers},
        environ_overrides=environ_overrides,
    )


def sample(metric, **labels):
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def requests(path, code, method="GET"):
    return sample("http_server_requests_total", method=method, path=path, code=code)


def series(name):
    return {
        tuple(sorted(s.labels.items()))
        for metric in REGISTRY.collect()
        for s in metric.samples
        if s.name == name
    }


def test_request_is_counted_and_timed_by_route_template(client):
    before_count = requests("/items/<int:item_id>", "200")
    before_timed = sample(
        "http_server_request_duration_seconds_count",
        method="GET",
        path="/items/<int:item_id>",
        code="200",
    )

    assert client.get("/items/7").status_code == 200
    assert client.get("/items/8").status_code == 200

    assert requests("/items/<int:item_id>", "200") == before_count + 2
    timed = sample(
        "http_server_request_duration_seconds_count",
        method="GET",
        path="/items/<int:item_id>",
        code="200",
    )
    assert timed == before_timed + 2


def test_exception_is_counted_by_class_name(client):
    before_errors = sample("http_server_exceptions_total", error="ValueError")
    before_500 = requests("/boom", "500")

    response = client.get("/boom")

    assert response.status_code == 500
    assert response.json == {"error": "Internal Server Error"}
    assert sample("http_server_exceptions_total", error="ValueError") == before_errors + 1
    assert requests("/boom", "500") == before_500 + 1


def test_requests_in_progress(client):
    assert client.get("/in-progress").json == {"value": 1.0}
    assert sample("http_server_requests_in_progress") == 0


def test_hostile_paths_methods_and_hosts_add_no_series(client):
    client.get("/nothing-here")
    client.open("/nothing-here", method="BREW")
    before = series("http_server_requests_total")
    before_unmatched = requests("unmatched", "404")

    for _ in range(50):
        random = uuid.uuid4().hex
        client.get(f"/{random}", headers={"Host": f"{random}.example"})
        client.open(f"/{random}", method=random.upper()[:8])
        client.get(f"/items/{random}")

    assert series("http_server_requests_total") == before
    assert requests("unmatched", "404") == before_unmatched + 100


def test_unknown_method_collapses_to_other(client):
    before = requests("unmatched", "405", method="other")

    client.open("/items/1", method="BREW")

    assert requests("unmatched", "405", method="other") == before + 1


def test_scrapes_are_not_counted(client):
    before = series("http_server_requests_total")
    before_in_progress = sample("http_server_requests_in_progress")

    for _ in range(3):
        assert scrape(client).status_code == 200

    paths = {dict(labels)["path"] for labels in series("http_server_requests_total")}
    assert METRICS_PATH not in paths
    assert series("http_server_requests_total") == before
    assert sample("http_server_requests_in_progress") == before_in_progress


@pytest.mark.parametrize("spelling", ["/" + METRICS_PATH, METRICS_PATH.replace("/", "///")])
def test_scrapes_spelt_otherwise_are_not_counted_either(client, spelling):
    """Flask merges slashes: `//metrics` reaches the metrics view, and is not counted."""
    before = requests(METRICS_PATH, "200")

    # As gunicorn passes it on; the test client would read `//metrics` as a host name.
    response = scrape(client, "/", environ_overrides={"PATH_INFO": spelling})

    assert response.status_code == 200
    assert b"http_server_requests_total" in response.data
    assert requests(METRICS_PATH, "200") == before


def test_app_info(app):
    labels = {
        "name": app.config["SERVICE_NAME"],
        "version": VERSION,
        "python_version": platform.python_version(),
    }
    assert sample("app_info", **labels) == 1


def test_metrics_endpoint_speaks_prometheus_text(client):
    client.get("/items/1")

    response = scrape(client)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert response.headers["Cache-Control"] == "no-store"
    assert "# TYPE http_server_requests_total counter" in response.text
    assert "# TYPE http_server_request_duration_seconds histogram" in response.text


def test_metrics_endpoint_speaks_openmetrics_when_asked(client):
    response = scrape(client, Accept="application/openmetrics-text")

    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain; version=abc",
        "application/openmetrics-text; version=abc",
        "application/openmetrics-text; version=1.x, text/plain",
    ],
)
def test_an_accept_header_it_cannot_read_gets_the_text_format(client, accept):
    before = sample("http_server_exceptions_total", error="TypeError")

    response = scrape(client, Accept=accept)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE http_server_requests_total counter" in response.text
    assert sample("http_server_exceptions_total", error="TypeError") == before


def test_metrics_endpoint_gzips_when_accepted(client):
    response = scrape(client, **{"Accept-Encoding": "gzip"})

    assert response.headers["Content-Encoding"] == "gzip"
    assert b"http_server_requests_total" in gzip.decompress(response.data)


def test_metrics_endpoint_filters_by_name(client):
    client.get("/items/1")

    response = scrape(client, METRICS_PATH + "?name[]=app_info&name[]=http_server_requests_total")

    names = {
        line.split("{")[0].split(" ")[0]
        for line in response.text.splitlines()
        if not line.startswith("#")
    }
    assert names == {"app_info", "http_server_requests_total"}


def test_a_blank_metrics_directory_stops_an_app_built_after_the_metrics_import(
    monkeypatch, tmp_path
):
    """prometheus_client would read it as the working directory; under `flask run`
    nothing replaces it first (python -m does)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", " ")

    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR is set but blank"):
        create_app()

    assert list(tmp_path.iterdir()) == []


def test_metrics_path_comes_from_the_settings():
    config = {"METRICS_PATH": "/internal/metrics", "METRICS_BASIC_AUTH_TOKEN": TOKEN}
    client = create_app({"METRICS_BASIC_AUTH": True, **config}).test_client()

    assert scrape(client, "/internal/metrics").status_code == 200
    assert scrape(client, "/metrics").status_code == 404


def current(metric):
    return metric.collect()[0].samples[0].value


def test_process_sampler_records_this_process():
    cpu_before = current(metrics.WORKERS_CPU)
    sampler = worker_records.ProcessSampler()

    sampler.sample()
    sampler.sample()

    process = {m.name: m.samples[0].value for m in ProcessCollector(registry=None).collect()}
    assert current(metrics.WORKER_MEMORY) > 0
    assert current(metrics.WORKER_OPEN_FDS) > 0
    # A new sampler counts this process's CPU time once, however often it samples.
    cpu_added = current(metrics.WORKERS_CPU) - cpu_before
    assert cpu_added == pytest.approx(process["process_cpu_seconds"], abs=0.05)


def exits_by_reason():
    [exits] = metrics.WORKER_EXITS.collect()
    return {s.labels["reason"]: s.value for s in exits.samples if s.name.endswith("_total")}


def test_a_worker_counts_itself_in_and_its_exit_once(monkeypatch):
    monkeypatch.setattr(worker_records, "_exit_recorded", False)
    monkeypatch.setattr(worker_records.ProcessSampler, "start", lambda sampler: None)
    before = exits_by_reason()

    worker_records.prepare_exit_count()
    worker_records.start_worker(configured_workers=4)
    worker_records.record_worker_exit("timeout")
    worker_records.record_worker_exit("shutdown")  # gunicorn's exit path, after the abort

    assert current(metrics.WORKERS_CONFIGURED) == 4
    assert current(metrics.WORKERS_ALIVE) == 1
    after = exits_by_reason()
    assert set(after) == set(metrics.EXIT_REASONS)
    assert {reason: after[reason] - before.get(reason, 0) for reason in after} == {
        "recycled": 0,
        "timeout": 1,
        "shutdown": 0,
        "killed": 0,
    }


def openmetrics_exemplars(client):
    """{(sample name, labels): exemplar} of an OpenMetrics scrape, as prometheus_client's
    strict parser reads it."""
    body = scrape(client, Accept="application/openmetrics-text; version=1.0.0").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.exemplar
        for family in openmetrics_parser.text_string_to_metric_families(body)
        for sample in family.samples
        if sample.exemplar
    }


def test_a_sampled_traceparent_leaves_its_trace_on_the_requests_bucket(client):
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    for flags in ("00", "02"):  # not sampled
        client.get("/items/7", headers={"traceparent": f"00-{uuid.uuid4().hex}-{span_id}-{flags}"})
    client.get("/items/7", headers={"traceparent": f"00-{trace_id}-{span_id}-01"})
    client.get("/items/7", headers={"traceparent": f"00-{uuid.uuid4().hex.upper()}-{span_id}-01"})

    found = {
        key: exemplar
        for key, exemplar in openmetrics_exemplars(client).items()
        if ("path", "/items/<int:item_id>") in key[1]
    }
    ((name, labels), exemplar), *others = found.items()
    assert others == []
    assert name == "http_server_request_duration_seconds_bucket"
    assert exemplar.labels == {"trace_id": trace_id, "span_id": span_id}
    assert 0 < exemplar.value <= float(dict(labels)["le"])
    assert "trace_id" not in scrape(client).text  # the text format has no exemplars


def test_a_services_own_histogram_takes_the_requests_trace_with_observe():
    checkout = Histogram("checkout_seconds", "Checkout.", ["method"], buckets=(0.1, 1.0))
    app = create_app({"METRICS_PATH": METRICS_PATH, "METRICS_BASIC_AUTH_TOKEN": TOKEN})

    @app.post("/checkout")
    def pay():
        observe(checkout.labels("card"), 0.5)
        return {}

    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    try:
        app.test_client().post("/checkout", headers={"traceparent": f"00-{trace_id}-{span_id}-01"})
        app.test_client().post("/checkout")  # no trace: counted, no exemplar
        found = openmetrics_exemplars(app.test_client())
    finally:
        REGISTRY.unregister(checkout)

    key = ("checkout_seconds_bucket", (("le", "1.0"), ("method", "card")))
    assert found[key].labels == {"trace_id": trace_id, "span_id": span_id}
    assert found[key].value == 0.5
    assert not [name for name, _ in found if name.startswith("checkout") and name != key[0]]
