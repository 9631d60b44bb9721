"""Jinja filters for rendering the template, loaded by cookiecutter through `_extensions`."""

import json

from cookiecutter.utils import simple_filter


@simple_filter
def toml_string(value):
    """A TOML basic string that holds `value` exactly, non-ASCII kept readable.

    JSON's escapes are a subset of TOML's; `tojson` would write characters outside the
    Basic Multilingual Plane as surrogate pairs, which TOML rejects. DEL is the one
    character TOML wants escaped that JSON leaves alone.
    """
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
