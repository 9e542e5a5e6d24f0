"""The suite's shared helpers (tests/conftest.py) for the tests kept beside each study."""

from tests.conftest import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
