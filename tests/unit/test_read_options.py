"""`ReadOptions` refuses options no store could honour, with `InvalidEventError`."""

from __future__ import annotations

import pytest

from eventsource.exceptions import InvalidEventError
from eventsource.stores.interface import ReadOptions


@pytest.mark.parametrize(
    "partition",
    [(0, 0), (2, 2), (-1, 3), (0, 2**31 + 1), (True, 2), (0.0, 2), [0, 2], (0, 2, 1), "0/2"],
)
def test_a_partition_outside_0_p_n_2_31_is_refused(partition: object) -> None:
    with pytest.raises(InvalidEventError, match="partition"):
        ReadOptions(partition=partition)  # type: ignore[arg-type]


@pytest.mark.parametrize("partition", [(0, 1), (1, 2), (2**31 - 1, 2**31)])
def test_partitions_up_to_2_31_are_accepted(partition: tuple[int, int]) -> None:
    assert ReadOptions(partition=partition).partition == partition
