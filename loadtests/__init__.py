"""Benchmarks and load tests: `python -m loadtests.fanout`, `locust -f loadtests/locustfile.py`."""
