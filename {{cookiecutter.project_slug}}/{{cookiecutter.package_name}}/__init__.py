from flask import Flask

__version__ = "0.1.0"


def create_app(config=None):
    """Build the service. `config` overrides the settings read from the environment."""
    app = Flask(__name__)
    if config is not None:
        app.config.from_mapping(config)

    # Imported here, not above: `python -m` this package sets up where prometheus_client
    # keeps its values before any metric is declared.
    from . import metrics, views

    app.register_blueprint(views.bp)
    metrics.init_app(app)  # last, once every route is registered
    return app
