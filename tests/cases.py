"""The configurations that drive the parity and bad-input tests: read from the per-rule case tables
(``tests/rule_cases``)."""

from tests.rule_cases import (ALL_CASES, ALL_IDS, CASES, IDS, INVALID, INVALID_IDS, STATEFUL,  # noqa: F401
                              STATEFUL_IDS, TORCH_CASES, TORCH_IDS, case_id)
