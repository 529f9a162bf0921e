"""The locally built model directory loads the same way in transformers as in memory."""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.model.tiny import build_tokenizer


def test_saved_tokenizer_reloads_with_identical_ids(sort_task, tiny_model_dir, tmp_path):
    reloaded = AutoTokenizer.from_pretrained(tiny_model_dir)
    fresh = build_tokenizer(sort_task, 512)
    samples = [sort_task.eval_problems(3)[i].prompt + sort_task.eval_problems(3)[i].answer for i in range(3)]
    for text in samples + [sort_task.instruction, "unicode ✓ and code: def f(x):\n    return x"]:
        assert reloaded(text)["input_ids"] == fresh(text)["input_ids"]
        assert reloaded.decode(reloaded(text)["input_ids"]) == text
    assert reloaded.eos_token_id != reloaded.pad_token_id


def test_model_is_a_qwen2_with_head_dim_32(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert cfg.model_type == "qwen2" and cfg.hidden_size // cfg.num_attention_heads >= 32
    out = model(torch.tensor([[3, 4, 5]])).logits
    assert out.shape == (1, 3, cfg.vocab_size) and torch.isfinite(out).all()
