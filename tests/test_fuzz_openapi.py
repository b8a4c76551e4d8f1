"""Fuzz the OpenAPI schema with schemathesis against the real server: >= 1,000 requests, no 5xx.

Every operation of `/openapi.json` gets requests generated from its schema, both valid
(positive) and deliberately invalid (negative) ones, sent over HTTP to the uvicorn server with
the real models. Each response is checked by schemathesis (no server error, documented status
code and content type, response body matching its schema, invalid data refused). One check is
left out: `positive_data_acceptance` expects every schema-valid request to succeed, but a schema
cannot say "a decodable JPEG", so random schema-valid bytes are rightly answered 400.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from serving_harness import real_server

MIN_REQUESTS = 1000
# Requests per (operation, mode). Schema-valid bodies include real generated PNG/JPEG images
# that go through the models (~0.1-0.3 s each on 2 cores), so most requests are negative ones.
EXAMPLES = {("/v1/perceive", "positive"): 200, ("/v1/perceive", "negative"): 850}


@pytest.fixture(scope="module")
def base(models_mirror: Path) -> str:
    return real_server()[0]


def test_fuzz_openapi_schema(base: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    statuses: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [schemathesis.GenerationMode.POSITIVE]
        if len(operation.query) or len(operation.body):  # else nothing can be made invalid
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            examples = EXAMPLES.get((operation.path, mode.value), 25)

            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                response = case.call_and_validate(base_url=base, timeout=60,
                                                  excluded_checks=[positive_data_acceptance])
                statuses[(case.operation.label, response.status_code)] += 1

            run()
    total = sum(statuses.values())
    print(f"{total} requests: {dict(statuses)}")
    assert total >= MIN_REQUESTS
    assert not [key for key in statuses if key[1] >= 500]
