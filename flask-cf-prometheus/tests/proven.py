"""The prometheus_client releases the kit's reader is proven on, and what to do beyond
them (conftest.py's --prove-prometheus-client widens them for a run)."""

from flask_cf_prometheus import _metric_files as metric_files

PROVE = "--prove-prometheus-client"
# The range the kit declares, whatever --prove-prometheus-client widens it to.
DECLARED = metric_files.PROVEN_VERSIONS


def unproven_message():
    """What to do when the installed prometheus_client is outside the proven range."""
    first, beyond = (".".join(map(str, numbers)) for numbers in metric_files.PROVEN_VERSIONS)
    return (
        f"prometheus_client {metric_files.installed_version()} is outside the releases the"
        f" kit's reader is proven on ({first} up to {beyond}), so the kit falls back to"
        f" prometheus_client's own reader. To prove it: pytest {PROVE}; if every test"
        " passes, widen PROVEN_VERSIONS in _metric_files.py and prometheus-client in"
        " pyproject.toml to it, note it in CHANGELOG.md, and release"
    )
