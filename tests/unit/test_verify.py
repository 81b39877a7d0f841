from __future__ import annotations

import numpy as np
import onnx

from dlc.frontend import TensorSpec
from dlc.verify import compare, make_inputs


def test_compare_counts_elements_outside_tolerance():
    expected = np.array([1.0, 100.0, 0.0, 5.0], np.float32)
    actual = np.array([1.0005, 100.05, 0.0, 5.1], np.float32)
    result = compare("y", actual, expected, rtol=1e-3, atol=1e-3)
    assert result.mismatches == 1  # only 5.1 vs 5.0 is beyond atol + rtol*|ref|
    assert abs(result.max_abs_error - 0.1) < 1e-5
    assert abs(result.max_rel_error - 0.02) < 1e-5


def test_compare_nan_agrees_only_with_nan():
    expected = np.array([np.nan, 1.0], np.float32)
    assert compare("y", expected.copy(), expected, rtol=0, atol=0).passed
    assert not compare("y", np.array([np.nan, np.nan], np.float32), expected, rtol=0, atol=0).passed


def test_inputs_are_seeded_and_fit_their_dtype(tiny):
    specs = (
        TensorSpec("x", (2, 3), "float32"),
        TensorSpec("attention_mask", (1, 8), "int64"),
        TensorSpec("flags", (4,), "bool"),
    )
    first, again = make_inputs(specs, seed=7), make_inputs(specs, seed=7)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert first["x"].dtype == np.float32 and np.all(np.abs(first["x"]) <= 1)
    assert set(np.unique(first["attention_mask"])) <= {0, 1}
    assert first["flags"].dtype == np.bool_


def test_token_ids_stay_inside_the_table_they_index(tiny):
    model = onnx.load(str(tiny("token_embedding")))
    ids = make_inputs((TensorSpec("ids", (1, 4000), "int64"),), model=model)["ids"]
    assert ids.min() >= 0 and ids.max() == 49  # 50-row table: every id valid, the range used


def test_indices_of_every_indexing_op_stay_in_range(tiny):
    """Random indices beyond the data would be refused by the library's index checks."""
    from dlc.verify import _index_bounds

    model = onnx.load(str(tiny("index_ops")))
    specs = tuple(TensorSpec(n, s, "int64") for n, s in
                  [("ge_idx", (3, 2)), ("nd_idx", (2, 2)), ("snd_idx", (2, 1)), ("se_idx", (1, 5))])
    assert _index_bounds(model, specs) == {"ge_idx": 5, "nd_idx": 3, "snd_idx": 3, "se_idx": 3}
