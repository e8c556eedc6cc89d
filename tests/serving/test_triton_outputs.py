"""The model config gains an output per new head, in either text form, and never loses one."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from serving.triton_outputs import declared_outputs, ensure_outputs, with_outputs
from tests.conftest import REPO_ROOT

CONFIG = (REPO_ROOT / "triton_models" / "feedpulse_classifier" / "config.pbtxt").read_text()


def test_a_new_head_is_added_and_the_config_still_parses(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text(CONFIG)
    added = ensure_outputs(tmp_path, ["sentiment_logits", "emotion_logits", "embedding"])
    assert added == ["emotion_logits"]
    text = (tmp_path / "config.pbtxt").read_text()
    parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert [o.name for o in parsed.output] == [
        "sentiment_logits",
        "topic_logits",
        "embedding",
        "emotion_logits",
    ]
    # Idempotent, and a head dropped by a later version keeps its harmless output.
    assert ensure_outputs(tmp_path, ["sentiment_logits", "embedding"]) == []
    assert "topic_logits" in declared_outputs((tmp_path / "config.pbtxt").read_text())


def test_the_colon_form_and_no_config_at_all() -> None:
    colon = 'name: "m"\noutput: [\n  { name: "embedding" data_type: TYPE_FP32 dims: [ -1 ] }\n]\n'
    assert declared_outputs(with_outputs(colon, ["a_logits", "embedding"])) == [
        "embedding",
        "a_logits",
    ]
    assert ensure_outputs(Path("/nonexistent"), ["a_logits"]) == []
