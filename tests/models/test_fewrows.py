"""FewRowsLinear computes what nn.Linear computes, for any row count, and the zoo returns it."""

import pytest
import torch
from torch import nn
from torch.nn import functional

from mfmaccel.models import load_model
from mfmaccel.runtime.fewrows import (
    FEW_ROWS,
    FewRowsLinear,
    few_rows_linear,
    slab_count,
    use_few_rows_linear,
)


def test_matches_linear_for_every_row_count_and_shape():
    torch.manual_seed(0)
    weight, bias = torch.randn(48, 24), torch.randn(48)
    for shape in [(1, 24), (3, 24), (2, 5, 24), (FEW_ROWS, 24), (FEW_ROWS + 1, 24), (0, 24)]:
        x = torch.randn(shape)
        ours = few_rows_linear(x, weight, bias)
        assert ours.shape == (*shape[:-1], 48)
        assert ours.is_contiguous()
        torch.testing.assert_close(ours, functional.linear(x, weight, bias))
        torch.testing.assert_close(few_rows_linear(x, weight), functional.linear(x, weight))


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(24,), (1, 24), (1, 1, 24)])
def test_one_row_splits_the_weight_per_thread_and_computes_the_same(two_threads, shape):
    torch.manual_seed(0)
    weight, bias = torch.randn(1024, 256), torch.randn(1024)  # 1 MiB: large enough to split
    assert slab_count(weight) == 2
    x = torch.randn(shape[:-1] + (256,))
    ours = few_rows_linear(x, weight, bias)
    assert ours.shape == (*shape[:-1], 1024) and ours.is_contiguous()
    # the same dot products, summed in another order: rounding apart
    torch.testing.assert_close(ours, functional.linear(x, weight, bias), rtol=0, atol=1e-4)


def test_one_row_keeps_the_stock_product_where_the_rows_do_not_divide(two_threads):
    odd, transposed = torch.randn(1023, 256), torch.randn(256, 1024).t()
    small = torch.randn(48, 24)
    assert slab_count(odd) == slab_count(transposed) == slab_count(small) == 1
    x = torch.randn(1, 256)
    torch.testing.assert_close(few_rows_linear(x, odd), functional.linear(x, odd))
    torch.testing.assert_close(few_rows_linear(x, transposed), functional.linear(x, transposed))


def test_one_row_product_carries_gradients(two_threads):
    weight = torch.randn(1024, 256, requires_grad=True)
    x = torch.randn(1, 256, requires_grad=True)
    few_rows_linear(x, weight).sum().backward()
    reference_x, reference_w = x.detach().clone().requires_grad_(), weight.detach().clone()
    reference_w.requires_grad_()
    functional.linear(reference_x, reference_w).sum().backward()
    torch.testing.assert_close(x.grad, reference_x.grad, rtol=0, atol=1e-4)
    torch.testing.assert_close(weight.grad, reference_w.grad, rtol=0, atol=1e-4)


def test_switch_keeps_parameters_and_leaves_subclasses_alone():
    class Custom(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(4, 8), Custom(8, 8), nn.ReLU())
    keys = list(model.state_dict())
    x = torch.randn(3, 4)
    before = model(x)
    use_few_rows_linear(model)
    assert type(model[0]) is FewRowsLinear and type(model[1]) is Custom
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before)


def test_loaded_models_use_it():
    module = load_model("tiny-llama").module
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is FewRowsLinear for m in linears)
