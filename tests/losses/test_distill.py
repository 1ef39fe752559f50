import pytest
import torch

from ray_reid.losses import distillation_loss


def test_zero_when_equal():
    x = torch.randn(4, 6)
    assert distillation_loss(x, x.clone()).item() == 0.0


def test_value_is_mean_squared_distance():
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(distillation_loss(s, t), ((s - t) ** 2).sum(1).mean())


def test_gradient_only_into_student():
    student = torch.randn(4, 6, requires_grad=True)
    teacher = torch.randn(4, 6, requires_grad=True)
    distillation_loss(student, teacher).backward()
    assert teacher.grad is None
    torch.testing.assert_close(student.grad, 2 * (student - teacher).detach() / 4)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="\\[B, D\\]"):
        distillation_loss(torch.randn(4, 6), torch.randn(4, 5))
