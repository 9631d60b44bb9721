"""The WSGI entry point that gunicorn serves (see the package's __main__.py)."""

from flask_cf_prometheus import ConfigError
from gunicorn.errors import AppImportError

from {{ cookiecutter.package_name }} import create_app

try:
    app = create_app()
except ConfigError as error:
    # gunicorn prints the one line and stops, rather than restart workers that cannot load.
    raise AppImportError(str(error)) from None
