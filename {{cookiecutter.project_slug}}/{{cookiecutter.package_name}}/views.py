from flask import Blueprint, current_app
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
    """Answer client and server errors as JSON, never as an HTML page or a traceback."""
    return {"error": error.name}, error.code
