from flask import Flask

from .config import (
    refuse_blank_metrics_directory,
    server_settings_from_environ,
    settings_from_environ,
)

__version__ = "0.1.0"


def create_app(config=None):
    """Build the service. `config` overrides the settings read from the environment."""
    server_settings_from_environ()  # checked too, as the gunicorn master checks them
    refuse_blank_metrics_directory()  # before metrics.py makes its first values
    app = Flask(__name__)
    app.config.from_mapping(settings_from_environ())
    if config is not None:
        app.config.from_mapping(config)

    from . import metrics, middleware, views

    metrics.init_app(app)
    middleware.init_app(app)
    app.register_blueprint(views.bp)
    metrics.check_no_route_shares_the_path(app)  # last, once every route is registered
    return app
