"""MAML / FOMAML / ANIL: exact meta-gradients, what each variant adapts, and that they learn."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from metanlp.methods import create_method
from metanlp.methods.maml import Task

N_WAY, K_SHOT, N_QUERY, HIDDEN = 3, 3, 2, 5


def random_task(width: int, seed: int = 0) -> Task:
    """Gaussian features (float64) with a class-dependent mean, so adaptation has something to fit."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(N_WAY, width, generator=generator, dtype=torch.float64)

    def sample(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(N_WAY).repeat_interleave(per_class)
        noise = torch.randn(len(labels), width, generator=generator, dtype=torch.float64)
        return means[labels] + noise, labels

    support, support_labels = sample(K_SHOT)
    query, query_labels = sample(N_QUERY)
    return Task(N_WAY, support, support_labels, query, query_labels)


def tiny_learner(name: str, encoder, **options):
    """A float64 learner whose meta-parameters are only the hidden layer (H → 5) of the head."""
    torch.manual_seed(0)
    defaults = {"finetune": "frozen", "head_hidden": HIDDEN, "inner_lr": 0.4, "inner_steps": 3}
    method = create_method(name, encoder, {**defaults, **options}).double()
    return method.eval()


def meta_loss(method, task: Task) -> torch.Tensor:
    return F.cross_entropy(method.adapt_and_score(task).query_logits, task.query_labels)


def meta_gradient(method, task: Task) -> torch.Tensor:
    parameters = [method.hidden.weight, method.hidden.bias]
    return torch.cat([g.flatten() for g in torch.autograd.grad(meta_loss(method, task), parameters)])


def finite_difference_gradient(method, task: Task, epsilon: float = 1e-6) -> torch.Tensor:
    estimates = []
    with torch.no_grad():
        for parameter in (method.hidden.weight, method.hidden.bias):
            flat = parameter.view(-1)
            for index in range(flat.numel()):
                original = flat[index].item()
                flat[index] = original + epsilon
                with torch.enable_grad():
                    above = meta_loss(method, task).item()
                flat[index] = original - epsilon
                with torch.enable_grad():
                    below = meta_loss(method, task).item()
                flat[index] = original
                estimates.append((above - below) / (2 * epsilon))
    return torch.tensor(estimates, dtype=torch.float64)


def relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return ((estimate - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize(("name", "head_init"), [("maml", "zero"), ("maml", "prototype"), ("anil", "zero")])
def test_second_order_meta_gradient_matches_finite_differences(name, head_init, tiny_encoder):
    method = tiny_learner(name, tiny_encoder, head_init=head_init)
    task = random_task(tiny_encoder.hidden_size)
    analytic = meta_gradient(method, task)
    numeric = finite_difference_gradient(method, task)
    assert numeric.norm() > 1e-3, "degenerate check: the meta-loss does not depend on θ"
    assert relative_error(analytic, numeric) < 1e-4


def test_meta_gradient_through_adapted_encoder_layers_matches_finite_differences(tiny_encoder, clinc_episodes):
    """MAML with finetune="top": the encoder runs on θ'_t via functional_call; check d/dθ along a random direction."""
    torch.manual_seed(0)
    options = {"finetune": "top", "top_k": 1, "head_hidden": HIDDEN, "inner_steps": 2, "encoder_inner_lr": 0.05}
    method = create_method("maml", tiny_encoder, options).double().eval()
    task = method.make_task(clinc_episodes[0], with_query=True, track_gradients=True)
    parameters = method.trainable_parameters()
    assert any(name.startswith("encoder.") for name in method.meta_parameters()), "the encoder should be adapted"
    gradients = torch.autograd.grad(meta_loss(method, task), parameters)
    direction = [torch.randn_like(parameter) for parameter in parameters]
    analytic = sum((g * d).sum() for g, d in zip(gradients, direction, strict=True)).item()

    def loss_moved_by(step: float) -> float:
        with torch.no_grad():
            for parameter, d in zip(parameters, direction, strict=True):
                parameter.add_(step * d)
        value = meta_loss(method, task).item()
        with torch.no_grad():
            for parameter, d in zip(parameters, direction, strict=True):
                parameter.sub_(step * d)
        return value

    epsilon = 1e-5
    numeric = (loss_moved_by(epsilon) - loss_moved_by(-epsilon)) / (2 * epsilon)
    assert abs(numeric) > 1e-3
    assert abs(analytic - numeric) / abs(numeric) < 1e-4


# ----- an independent reference: dθ_k/dθ_0 = Π_t (I − α H_t), written out with explicit Hessians


def reference_logits(flat: torch.Tensor, features: torch.Tensor, width: int) -> torch.Tensor:
    """The head as plain formulas: layer-norm, ReLU(W1 x + b1), W2 h + b2, all params in one vector."""
    sizes = [HIDDEN * width, HIDDEN, N_WAY * HIDDEN, N_WAY]
    w1, b1, w2, b2 = torch.split(flat, sizes)
    x = (features - features.mean(-1, keepdim=True)) / torch.sqrt(features.var(-1, unbiased=False, keepdim=True) + 1e-5)
    h = torch.relu(x @ w1.view(HIDDEN, width).T + b1)
    return h @ w2.view(N_WAY, HIDDEN).T + b2


def reference_meta_gradient(method, task: Task, keep_hessian: bool) -> torch.Tensor:
    width = task.support.shape[-1]
    inner_lr, steps = method.options.inner_lr, method.options.inner_steps
    theta = torch.cat([
        method.hidden.weight.detach().flatten(), method.hidden.bias.detach(), torch.zeros(N_WAY * HIDDEN + N_WAY,
                                                                                         dtype=torch.float64)
    ])

    def support_loss(flat):
        return F.cross_entropy(reference_logits(flat, task.support, width), task.support_labels)

    def query_loss(flat):
        return F.cross_entropy(reference_logits(flat, task.query, width), task.query_labels)

    jacobian = torch.eye(theta.numel(), dtype=torch.float64)  # dθ_t / dθ_0
    for _ in range(steps):
        hessian = torch.func.hessian(support_loss)(theta) if keep_hessian else torch.zeros_like(jacobian)
        jacobian = (torch.eye(theta.numel(), dtype=torch.float64) - inner_lr * hessian) @ jacobian
        theta = theta - inner_lr * torch.func.grad(support_loss)(theta)
    full = jacobian.T @ torch.func.grad(query_loss)(theta)
    return full[: HIDDEN * width + HIDDEN]  # the meta-parameters: the hidden layer (output starts at 0)


def test_meta_gradients_match_the_explicit_hessian_formula(tiny_encoder):
    task = random_task(tiny_encoder.hidden_size, seed=1)
    second = meta_gradient(tiny_learner("maml", tiny_encoder), task)
    first = meta_gradient(tiny_learner("fomaml", tiny_encoder), task)
    assert relative_error(second, reference_meta_gradient(tiny_learner("maml", tiny_encoder), task, True)) < 1e-8
    # First order = the query-loss gradient at θ_k, i.e. the formula with every Hessian set to zero.
    assert relative_error(first, reference_meta_gradient(tiny_learner("maml", tiny_encoder), task, False)) < 1e-8
    assert relative_error(first, second) > 0.05, "the Hessian terms should matter here"


@pytest.mark.parametrize("steps", [1, 4])
def test_first_order_is_the_query_gradient_at_the_adapted_parameters(steps, tiny_encoder):
    task = random_task(tiny_encoder.hidden_size, seed=2)
    first_order = tiny_learner("fomaml", tiny_encoder, inner_steps=steps)
    # Adapt by hand: plain SGD on leaf copies, then differentiate the query loss there.
    params = {name: value.detach().clone() for name, value in first_order.meta_parameters().items()}
    params["output.weight"] = torch.zeros(N_WAY, HIDDEN, dtype=torch.float64)
    params["output.bias"] = torch.zeros(N_WAY, dtype=torch.float64)
    for _ in range(steps):
        leaves = {name: value.requires_grad_() for name, value in params.items()}
        loss = F.cross_entropy(first_order.logits(leaves, task.support), task.support_labels)
        gradients = torch.autograd.grad(loss, list(leaves.values()))
        params = {name: (value - 0.4 * g).detach() for (name, value), g in zip(leaves.items(), gradients, strict=True)}
    adapted = {name: value.requires_grad_() for name, value in params.items()}
    query_loss = F.cross_entropy(first_order.logits(adapted, task.query), task.query_labels)
    by_hand = torch.cat([g.flatten() for g in torch.autograd.grad(query_loss, [adapted["hidden.weight"],
                                                                               adapted["hidden.bias"]])])
    assert torch.allclose(meta_gradient(first_order, task), by_hand, rtol=1e-10, atol=1e-12)
    second = meta_gradient(tiny_learner("maml", tiny_encoder, inner_steps=steps), task)
    assert relative_error(by_hand, second) > 0.01


# ----- what each variant adapts, and when the outer step happens


def test_anil_adapts_only_the_output_layer_and_maml_adapts_the_body_too(tiny_encoder):
    task = random_task(tiny_encoder.hidden_size)
    for name, body_moves in (("anil", False), ("maml", True)):
        method = tiny_learner(name, tiny_encoder)
        adapted = method.adapt_and_score(task).adapted
        assert torch.equal(adapted["hidden.weight"], method.hidden.weight) != body_moves, name
        assert adapted["output.weight"].abs().sum() > 0, f"{name} did not adapt its output layer"


def test_meta_gradients_of_a_meta_batch_are_summed_before_one_outer_step(tiny_encoder, clinc_episodes):
    torch.manual_seed(0)
    method = create_method("maml", tiny_encoder, {"finetune": "frozen", "head_hidden": 8, "meta_batch": 3})
    start = method.hidden.weight.detach().clone()
    for episode in clinc_episodes[:2]:
        method.train_step(episode)
        assert torch.equal(method.hidden.weight, start), "stepped before the meta-batch was complete"
    metrics = method.train_step(clinc_episodes[2])
    assert not torch.equal(method.hidden.weight, start)
    assert len(metrics["inner_support_losses"]) == len(metrics["inner_query_losses"]) == method.options.inner_steps
    assert metrics["inner_support_losses"][-1] == pytest.approx(metrics["support_loss"])
    assert metrics["inner_query_losses"][-1] == pytest.approx(metrics["query_loss"])


# ----- each method learns: held-out (meta-test) classes, from-scratch encoder trained through the outer loop


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "steps", "options"),
    [
        ("maml", 80, {"inner_steps": 2, "meta_batch": 2}),  # measured 0.68 → 0.79
        ("fomaml", 150, {"inner_steps": 2, "meta_batch": 1}),  # measured 0.68 → 0.81
        ("anil", 100, {"meta_batch": 1}),  # measured 0.69 → 0.81
    ],
)
def test_meta_training_lifts_held_out_accuracy(name, steps, options, clinc_dataset):
    """Seed 0 as measured above; seeds 1 and 2 gained 0.06–0.12 too."""
    from metanlp.data.episodes import EpisodeSampler
    from metanlp.data.registry import examples_for_split
    from metanlp.encoders import build_encoder
    from metanlp.evaluation import evaluate
    from tests.conftest import TINY_ENCODER

    torch.manual_seed(0)
    # inner_lr 0.3: the default (0.1) suits MiniLM's 384-wide embeddings; this encoder is 32 wide.
    method = create_method(name, build_encoder("scratch", **TINY_ENCODER), {"lr": 3e-3, "inner_lr": 0.3, **options})
    train = EpisodeSampler.from_examples(examples_for_split(clinc_dataset, "train"), 5, 5, 5, seed=0)
    test = EpisodeSampler.from_examples(examples_for_split(clinc_dataset, "test"), 5, 5, 5, seed=1).take(40)
    before = evaluate(method, test).mean_accuracy
    for _ in range(steps):
        method.train_step(train.sample())
    after = evaluate(method, test).mean_accuracy
    chance = 1 / 5
    assert after > chance + 0.45, f"{name} reached only {after:.3f}"
    assert after > before + 0.06, f"{name}: {before:.3f} → {after:.3f}"
