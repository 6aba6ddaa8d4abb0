"""The bench's arithmetic: the encoder's FLOP count."""

import numpy as np
import pytest

from workers.bench.encoder import attention_bench, encoder_flops


def test_minilm_costs_about_580_mflop_for_a_27_token_message():
    # all-MiniLM-L6-v2: 6 layers, hidden 384, feed-forward 1536 (the figure).
    assert encoder_flops(np.array([27]), 6, 384, 1536)[0] == pytest.approx(580e6, rel=0.01)


def test_flops_grow_linearly_in_layers_and_faster_than_linearly_in_tokens():
    one, two = encoder_flops(np.array([32, 64]), 1, 384, 1536)
    assert encoder_flops(np.array([32]), 6, 384, 1536)[0] == pytest.approx(6 * one)
    assert two > 2 * one  # the attention term is quadratic in tokens


def test_attention_bench_reports_a_positive_time():
    assert attention_bench(n=8, m=4, repeats=3)["us_per_message"] > 0
