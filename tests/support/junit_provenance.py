"""Write the test run's commit and environment into pytest's JUnit report, as testsuite
properties an evidence pack reads back (:mod:`chargeward.evidence.testrun`).

Under pytest-xdist only the controller writes the report, so this runs there
(``pytest_sessionstart`` in ``tests/conftest.py``); ``record_testsuite_property`` in a worker
would be dropped.
"""

from __future__ import annotations

import pytest
from _pytest.junitxml import xml_key  # the report being written; pytest has no public handle

from chargeward.evidence.testrun import run_properties


def record_run(config: pytest.Config) -> None:
    """Add the run's properties to the JUnit report, when this process writes one."""
    xml = config.stash.get(xml_key, None)
    if xml is None:  # no --junitxml, or an xdist worker
        return
    for name, value in run_properties(config.rootpath).items():
        xml.add_global_property(name, value)
