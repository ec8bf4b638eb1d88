"""The configurations that drive the parity and bad-input tests: read from the per-rule case tables
(``tests/rule_cases``)."""

from tests.rule_cases import CASES, IDS, INVALID, INVALID_IDS, case_id  # noqa: F401
