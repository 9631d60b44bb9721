"""The WSGI entry point: `gunicorn --config gunicorn.conf.py wsgi:app`."""

from {{ cookiecutter.package_name }} import create_app

app = create_app()
