"""The depth limit of JSON bodies (api/body.py), against a reference: brackets inside strings,
escaped quotes and backslashes neither count nor hide a level."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from api.body import _deeper_than

# Leaves and keys that hold what the check must see through.
TRICKY = ["[", "]", "{", "}", 'a"b', "\\", "x][", '\\"[', '"]', "\\\\", '\\\\"', '""', "[]", ""]


def depth(value: Any) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    return 0


def generated(rng: random.Random, levels: int) -> Any:
    if levels == 0:
        return rng.choice([*TRICKY, 1, None])
    items = [generated(rng, levels - 1) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.5:
        return items
    return {rng.choice(TRICKY) + str(i): item for i, item in enumerate(items)}


@pytest.mark.parametrize("seed", range(4))
def test_depth_is_judged_exactly(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        value = generated(rng, rng.randint(0, 9))
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        unescaped = raw.encode().replace(b"\\\\", b"")  # as `decode_json` hands it over
        for limit in range(1, 10):
            assert _deeper_than(unescaped, limit) == (depth(value) > limit), (raw, limit)


def test_a_list_of_many_shallow_events_is_not_too_deep() -> None:
    events = [{"channel": "c", "type": "t", "data": {"n": [i, "]]]"]}} for i in range(1000)]
    assert not _deeper_than(json.dumps(events).encode(), 4)
    assert _deeper_than(json.dumps(events).encode(), 3)
