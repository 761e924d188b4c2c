"""The chaos run (stack/chaos.py) cut down for CI: the three real services, kill -9s, a broker restart
and an S3 outage while jobs flow; then exactly one expected terminal result per job, every generated
image decodes, nothing left in flight. About 3 minutes on 2 cores; `make chaos` is the full run."""

from __future__ import annotations

import pytest

import chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.chaos]

CI_RUN = chaos.Options(jobs=40, kills=10, broker_restart=True, s3_outage_s=10, seed=7, kill_interval_s=3.0,
                       baseline_rate=4.0, drain_timeout_s=300)


def test_kills_broker_restart_and_s3_outage_lose_and_duplicate_nothing(pipeline, dev_models):
    report = chaos.run(pipeline, CI_RUN, dev_models)

    print(report.table())
    assert report.chaos.kills == CI_RUN.kills
    assert report.chaos.broker_outage_s is not None and report.chaos.s3_outage_s is not None
    assert not report.verdict.failures(), "\n".join(report.verdict.failures() + report.crashes)
