"""Property checks shared by the model tests."""

import copy

import torch
import torch.nn.functional as F


def perturbed(model, std=0.1):
    """A copy of ``model`` moved away from its initialisation (zero-initialised layers become non-zero)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model


def assert_every_parameter_gets_gradient(model, x, t, y=None):
    model = perturbed(model).eval()
    out = model(x, t, y)
    (out * torch.randn_like(out)).sum().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


def assert_trains(model, x, t, y=None, steps=50, lr=3e-3, factor=10.0):
    """50 AdamW steps fit a fixed random target on a fixed batch: the MSE falls by ``factor``."""
    target = torch.randn_like(x)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(model(x, t, y), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / factor, f"loss went from {losses[0]:.3g} to {losses[-1]:.3g}"


def assert_batch_equivariant(model, x, t, y=None):
    """Samples do not interact: permuting the batch permutes the output."""
    model = perturbed(model).eval()
    perm = torch.randperm(x.shape[0])
    with torch.no_grad():
        out = model(x, t, y)
        out_perm = model(x[perm], t[perm], None if y is None else y[perm])
    assert out.abs().max() > 1e-2  # non-trivial output
    torch.testing.assert_close(out_perm, out[perm], rtol=1e-4, atol=1e-5)


def assert_null_label_is_unconditional(make_model, x, t, num_classes):
    """``make_model(label_dropout)`` builds a class-conditional model.  The null label is exactly y=None, real
    labels change the output, label dropout 1.0 nulls every label in training and nothing in eval."""
    model = perturbed(make_model(1.0))
    assert model.null_label == model.num_classes == num_classes
    null = torch.full((x.shape[0],), num_classes)
    y0, y1 = torch.zeros_like(null), torch.ones_like(null)
    with torch.no_grad():
        model.eval()
        out_none, out_null, out0, out1 = model(x, t), model(x, t, null), model(x, t, y0), model(x, t, y1)
        assert torch.equal(out_null, out_none)
        assert (out0 - out1).abs().max() > 1e-3, "labels 0 and 1 give the same output"
        assert (out0 - out_none).abs().max() > 1e-3, "label 0 gives the unconditional output"
        model.train()  # label dropout 1.0: every label becomes the null label
        torch.testing.assert_close(model(x, t, y0), out_none, rtol=0, atol=0)
        torch.testing.assert_close(model(x, t, y1), out_none, rtol=0, atol=0)
