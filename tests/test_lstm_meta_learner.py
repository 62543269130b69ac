"""The LSTM meta-learner: its preprocessing, its update rule, and that the learned optimiser beats SGD."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from metanlp.methods import create_method
from metanlp.methods._functional import head_logits
from metanlp.methods.lstm_meta_learner import preprocess

N_WAY, K_SHOT, N_QUERY = 5, 5, 10
SIGNAL_DIMS, NOISE_SCALE = 16, 5.0


def test_preprocessing_follows_the_log_sign_rule():
    p = 10.0
    x = torch.tensor([3.0, -0.02, 1e-6, -2e-5, 0.0])
    out = preprocess(x, p)
    assert torch.allclose(out[0], torch.tensor([math.log(3.0) / p, 1.0]))
    assert torch.allclose(out[1], torch.tensor([math.log(0.02) / p, -1.0]))
    assert torch.allclose(out[2], torch.tensor([-1.0, math.exp(p) * 1e-6]))  # |x| < e^-10 ≈ 4.5e-5
    assert torch.allclose(out[3], torch.tensor([-1.0, math.exp(p) * -2e-5]))
    assert torch.equal(out[4], torch.tensor([-1.0, 0.0]))


def test_one_step_is_forget_times_theta_minus_input_times_gradient(tiny_encoder):
    method = create_method("lstm_meta_learner", tiny_encoder)
    cell = method.optimizer_lstm
    theta, gradient = torch.randn(7), torch.randn(7)
    state = cell.initial_state(theta)
    new_theta, new_state = cell(theta, gradient, torch.tensor(1.3), state)
    expected = new_state.forget[:, 0] * theta - new_state.input[:, 0] * gradient
    assert torch.allclose(new_theta, expected)
    # Before meta-training: keep θ (f = σ(5) ≈ 0.993) and step with i ≈ initial_step_size.
    assert torch.allclose(new_state.forget, torch.full_like(new_state.forget, 0.9933), atol=2e-3)
    step_size = method.options.initial_step_size
    assert torch.allclose(new_state.input, torch.full_like(new_state.input, step_size), atol=1e-2)


def noisy_cluster_task(generator: torch.Generator, width: int):
    """Gaussian classes in the first 16 dimensions; the other dimensions are loud noise.

    Plain SGD fits the noise as eagerly as the signal (their gradients are large), so no single
    learning rate is good; an optimiser that looks at each coordinate's gradient can do better.
    """
    means = torch.randn(N_WAY, SIGNAL_DIMS, generator=generator) * 1.5

    def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(N_WAY).repeat_interleave(per_class)
        signal = means[labels] + torch.randn(len(labels), SIGNAL_DIMS, generator=generator)
        noise = torch.randn(len(labels), width - SIGNAL_DIMS, generator=generator) * NOISE_SCALE
        return torch.cat([signal, noise], dim=1), labels

    return (*draw(K_SHOT), *draw(N_QUERY))


def mean_query_loss(adapt, tasks) -> float:
    losses = []
    for support, support_labels, query, query_labels in tasks:
        params = adapt(support, support_labels)
        with torch.no_grad():
            losses.append(F.cross_entropy(head_logits(params, query), query_labels).item())
    return sum(losses) / len(losses)


def sgd_adapter(method, lr: float, steps: int):
    """Plain SGD on the same learner from the same θ_0."""

    def adapt(support, labels):
        theta = method.initial_theta(N_WAY).detach()
        for _ in range(steps):
            point = theta.requires_grad_()
            loss = F.cross_entropy(head_logits(method.unflatten(point, N_WAY), support), labels)
            (gradient,) = torch.autograd.grad(loss, point)
            theta = (theta - lr * gradient).detach()
        return method.unflatten(theta, N_WAY)

    return adapt


def test_learned_optimizer_beats_tuned_sgd_with_the_same_steps(tiny_encoder):
    torch.manual_seed(0)
    width = tiny_encoder.hidden_size
    # The paper's learner and optimiser: a linear head, gradients read by a 20-unit LSTM first.
    method = create_method(
        "lstm_meta_learner",
        tiny_encoder,
        {"lr": 3e-3, "inner_steps": 5, "head_hidden": 0, "lstm_hidden": 20, "initial_step_size": 0.1},
    )
    steps = method.options.inner_steps
    held_out = [noisy_cluster_task(torch.Generator().manual_seed(1000 + i), width) for i in range(40)]
    before = mean_query_loss(lambda s, y: method.adapt_features(s, y, N_WAY), held_out)

    training = torch.Generator().manual_seed(1)
    for _ in range(300):
        method.learn_from_features(*noisy_cluster_task(training, width), N_WAY)

    learned = mean_query_loss(lambda s, y: method.adapt_features(s, y, N_WAY), held_out)
    sgd = {lr: mean_query_loss(sgd_adapter(method, lr, steps), held_out) for lr in (0.1, 0.3, 1.0, 2.0, 3.0)}
    best_lr = min(sgd, key=sgd.get)
    # Measured over three seeds: learned 0.27–0.28; best SGD 1.23–1.26 (at lr 1.0); before meta-training 1.44–1.45.
    assert learned < 0.6 * sgd[best_lr], f"learned {learned:.3f} vs SGD {sgd}"
    assert learned < 0.6 * before
    assert 0.3 < best_lr < 3.0, "the SGD grid should bracket its best learning rate"


def query_accuracy(method, tasks) -> float:
    correct = []
    for support, support_labels, query, query_labels in tasks:
        params = method.adapt_features(support, support_labels, N_WAY)
        with torch.no_grad():
            correct.append((head_logits(params, query).argmax(-1) == query_labels).float().mean().item())
    return sum(correct) / len(correct)


def test_meta_training_the_default_lifts_accuracy_on_new_classes(tiny_encoder):
    """Defaults (a 32-unit hidden layer whose start is meta-learned with the optimiser), but lr 3e-3: the
    default 1e-4 is tuned for real text, and here the loud noise dimensions must be muted quickly."""
    torch.manual_seed(0)
    width = tiny_encoder.hidden_size
    method = create_method("lstm_meta_learner", tiny_encoder, {"lr": 3e-3})
    held_out = [noisy_cluster_task(torch.Generator().manual_seed(1000 + i), width) for i in range(40)]
    before = query_accuracy(method, held_out)
    training = torch.Generator().manual_seed(1)
    for _ in range(300):
        method.learn_from_features(*noisy_cluster_task(training, width), N_WAY)
    after = query_accuracy(method, held_out)
    # Measured over three seeds: 0.36 before, 0.88-0.89 after (default lr: 0.38-0.39 after).
    assert after > before + 0.3, (before, after)
