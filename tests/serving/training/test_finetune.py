"""Multi-task fine-tuning: batching, the masked loss, learning on real rows, exact resume."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.multihead import MultiHeadModel, load_encoder
from serving.tasks import DEFAULT_TASKS
from serving.training.batching import choose_max_length, length_batches
from serving.training.data import TaskData, load_task_dir
from serving.training.finetune import FineTuneConfig, fine_tune
from serving.training.loss import IGNORE, multitask_loss
from serving.training.prediction import evaluate_sets
from tests.conftest import SHARED_DATA

SENTIMENT, TOPIC = DEFAULT_TASKS
ModelFactory = Callable[[], tuple[MultiHeadModel, Any]]


@pytest.fixture
def model_factory() -> ModelFactory:
    """Fresh MiniLM + untrained heads, seeded so every call starts from the same weights."""

    def make() -> tuple[MultiHeadModel, Any]:
        torch.manual_seed(0)
        encoder, tokenizer = load_encoder(None)
        return MultiHeadModel(encoder, DEFAULT_TASKS), tokenizer

    return make


@pytest.fixture(scope="module")
def small_sets() -> list[TaskData]:
    """Real rows: 192 AG News and 192 TweetEval training rows, held-out val/test slices."""
    return [
        load_task_dir(SHARED_DATA / "ag_news", TOPIC, limit=192, seed=1),
        load_task_dir(SHARED_DATA / "tweeteval_sentiment", SENTIMENT, limit=192, seed=1),
    ]


def test_length_batches_cover_every_row_once_with_similar_lengths() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(1000)]
    batches = length_batches(lengths, 16, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread / len(batches) < 10  # random batches would spread ~100 tokens
    assert length_batches(lengths, 16, random.Random(1)) == batches


def test_each_head_learns_only_from_its_own_rows(model_factory: ModelFactory) -> None:
    model, _ = model_factory()
    sentiment_logits = torch.randn(4, 3, requires_grad=True)
    topic_logits = torch.randn(4, 4, requires_grad=True)
    targets = {
        "sentiment": torch.tensor([0, 2, IGNORE, IGNORE]),
        "topic": torch.tensor([IGNORE, IGNORE, 1, 3]),
    }
    loss = multitask_loss(
        (sentiment_logits, topic_logits, torch.zeros(4, 8)),
        targets,
        model,
        {"sentiment": None, "topic": None},
    )
    loss.backward()
    assert sentiment_logits.grad is not None and topic_logits.grad is not None
    assert torch.all(sentiment_logits.grad[2:] == 0) and torch.any(sentiment_logits.grad[:2] != 0)
    assert torch.all(topic_logits.grad[:2] == 0) and torch.any(topic_logits.grad[2:] != 0)


def test_window_is_chosen_from_the_data(model_factory: ModelFactory) -> None:
    _, tokenizer = model_factory()
    short = choose_max_length(tokenizer, ["good game tonight"] * 50)
    long = choose_max_length(tokenizer, [" ".join(["word"] * 150)] * 50)
    assert short == 16 and long == 160


def test_fine_tuning_a_small_slice_beats_untrained_heads(
    model_factory: ModelFactory, small_sets: list[TaskData]
) -> None:
    model, tokenizer = model_factory()
    before = evaluate_sets(model, tokenizer, small_sets, 64, split="test")
    train = [row for data in small_sets for row in data.train]
    config = FineTuneConfig(epochs=3, batch_size=16, max_length=64, eval_every=12, seed=0)
    result = fine_tune(model, tokenizer, train, small_sets, config)
    after = evaluate_sets(model, tokenizer, small_sets, 64, split="test")
    assert result.steps == 3 * 24 or result.stopped_early
    assert result.history and result.best_score == max(h["val_score"] for h in result.history)
    # AG News topics are easy from the encoder's features; tweets are harder.
    assert after["ag_news"]["accuracy"] >= before["ag_news"]["accuracy"] + 0.3
    assert (
        after["tweeteval_sentiment"]["macro_recall"]
        > before["tweeteval_sentiment"]["macro_recall"] + 0.05
    )


def test_interrupted_run_resumes_to_the_same_weights(
    model_factory: ModelFactory, small_sets: list[TaskData], tmp_path: Path
) -> None:
    train = [row for data in small_sets for row in data.train][:96]
    config = FineTuneConfig(
        epochs=2, batch_size=16, max_length=32, eval_every=5, checkpoint_every=1, precision="fp32"
    )
    whole, tokenizer = model_factory()
    fine_tune(whole, tokenizer, train, small_sets, config)

    class Interrupt(Exception):
        pass

    def stop_at_8(stage: str, done: int, total: int, **figures: float) -> None:
        if done == 8:
            raise Interrupt

    interrupted, _ = model_factory()
    with pytest.raises(Interrupt):
        fine_tune(
            interrupted,
            tokenizer,
            train,
            small_sets,
            config,
            checkpoint_dir=tmp_path,
            progress=stop_at_8,
        )
    resumed, _ = model_factory()
    result = fine_tune(
        resumed, tokenizer, train, small_sets, config, checkpoint_dir=tmp_path, resume=True
    )
    assert result.steps == 12
    for name, tensor in whole.state_dict().items():
        assert torch.allclose(tensor, resumed.state_dict()[name], atol=1e-6), name


def test_resume_refuses_a_checkpoint_of_other_data(
    model_factory: ModelFactory, small_sets: list[TaskData], tmp_path: Path
) -> None:
    train = [row for data in small_sets for row in data.train]
    config = FineTuneConfig(max_steps=1, batch_size=8, max_length=16, precision="fp32")
    model, tokenizer = model_factory()
    fine_tune(model, tokenizer, train[:16], small_sets, config, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other data or settings"):
        fine_tune(
            model, tokenizer, train[16:32], small_sets, config, checkpoint_dir=tmp_path, resume=True
        )
