from flask import Blueprint, current_app, json
from werkzeug.exceptions import HTTPException

from . import __version__

bp = Blueprint("service", __name__)


@bp.get("/")
def index():
    """Say which service, version and instance answered."""
    return {
        "service": current_app.config["SERVICE_NAME"],
        "version": __version__,
        "instance": current_app.config["INSTANCE_INDEX"],
    }


@bp.get("/_status")
def status():
    """Cloud Foundry's http health check: 200 while this instance can serve."""
    return {"status": "ok"}


@bp.app_errorhandler(HTTPException)
def http_error(error):
    """Answer client and server errors as JSON, never as an HTML page or a traceback.

    The error's own headers stay: Allow on a 405, WWW-Authenticate on a 401.
    """
    response = error.get_response()
    response.set_data(json.dumps({"error": error.name}))
    response.content_type = "application/json"
    return response
