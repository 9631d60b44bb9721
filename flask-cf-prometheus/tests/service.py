"""A service as the template bakes one, for the kit's tests: a factory, its views, and
the kit wired in last."""

from flask import Blueprint, Flask, current_app, json
from werkzeug.exceptions import HTTPException

from flask_cf_prometheus import Metrics

SERVICE = "test-service"
VERSION = "1.2.3"

bp = Blueprint("service", __name__)


@bp.get("/")
def index():
    return {"service": current_app.config["SERVICE_NAME"], "version": VERSION}


@bp.get("/_status")
def status():
    return {"status": "ok"}


@bp.app_errorhandler(HTTPException)
def http_error(error):
    response = error.get_response()
    response.set_data(json.dumps({"error": error.name}))
    response.content_type = "application/json"
    return response


def create_app(config=None):
    app = Flask(__name__)
    if config is not None:
        app.config.from_mapping(config)
    app.register_blueprint(bp)
    Metrics(service=SERVICE, version=VERSION).init_app(app)
    return app
