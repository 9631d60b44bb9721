"""Stand-ins for what cf-discovery and a service talk to, on loopback: the Cloud Foundry
API, its UAA and its router (cloudfoundry.py), on a threaded HTTP server (loopback.py).

The kit's suite imports this package as tests.standins; the template's suite and its
bench import it as standins (flask-cf-prometheus/tests on their path), so that both
test against one stand-in."""
