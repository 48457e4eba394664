"""Prompt templates: how a Sample's problem text becomes the token ids the model sees."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

# The book's chapter-6 prompt (Raschka, "Build a Reasoning Model (From Scratch)").
BOOK = (
    "You are a helpful math assistant.\nAnswer the question and write the final result on a new "
    "line as:\n\\boxed{{ANSWER}}\n\nQuestion:\n{prompt}\n\nAnswer:"
)
TEMPLATES = {"plain": "{prompt}\n", "book": BOOK}


def check_template(name: str) -> None:
    if name not in (*TEMPLATES, "chat", "auto"):
        raise ValueError(f"task.template={name!r}; use one of auto, chat, {', '.join(TEMPLATES)}")


def prompt_ids(problem: str, template: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the rendered prompt. "auto" uses the chat template when the tokenizer has one."""
    if template == "auto":
        template = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if template == "chat":
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem}], add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tokenizer(TEMPLATES[template].format(prompt=problem))["input_ids"]
