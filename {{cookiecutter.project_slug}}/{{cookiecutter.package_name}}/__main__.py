"""`python -m` this package: the service under gunicorn, as manifest.yml starts it.

Arguments go to gunicorn, after gunicorn.conf.py: `--bind 127.0.0.1:8000`, say.
"""

from flask_cf_prometheus import launcher

if __name__ == "__main__":
    launcher.main(f"{__package__}:create_app")
