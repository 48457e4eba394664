"""Prompt templates: how a Sample's problem text becomes the token ids the model sees.

task.template: `auto` (chat when the tokenizer has a chat template, else plain), `chat` (the
tokenizer's chat template, the problem as the user's message), `plain` (the problem and a
newline), `book` (the book's chapter-6 prompt: the final result as \\boxed{ANSWER}), `r1zero`
(DeepSeek-R1-Zero: reasoning in <think>, then the answer in <answer>).
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

# The book's chapter-6 prompt (Raschka, "Build a Reasoning Model (From Scratch)").
BOOK = (
    "You are a helpful math assistant.\nAnswer the question and write the final result on a new "
    "line as:\n\\boxed{{ANSWER}}\n\nQuestion:\n{prompt}\n\nAnswer:"
)
# DeepSeek-R1-Zero's template (arXiv 2501.12948, table 1), in our words: a plain-text
# conversation for a base model, reasoning in <think>, the answer in <answer>. The prompt ends
# inside the opening <think>, so the response continues the thought; score its format with the
# `*_r1zero` format rewards. The answer is asked for as \boxed{...}, the "specified format"
# the paper's rule-based accuracy reward checks, so the math verifier finds it either way.
R1ZERO = (
    "A conversation between a User and an Assistant. The User asks a question and the Assistant "
    "solves it. The Assistant first thinks the problem through, then gives the answer. The "
    "thinking goes between <think> and </think>, the answer between <answer> and </answer>, "
    "exactly in this form:\n<think>\nstep-by-step reasoning\n</think>\n<answer>\nthe final "
    "answer as \\boxed{{...}}\n</answer>\nUser: {prompt}\nAssistant: <think>"
)
TEMPLATES = {"plain": "{prompt}\n", "book": BOOK, "r1zero": R1ZERO}


def check_template(name: str) -> None:
    if name not in (*TEMPLATES, "chat", "auto"):
        raise ValueError(f"task.template={name!r} is unknown; use one of auto, chat, {', '.join(TEMPLATES)}")


def resolve_template(template: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The template a prompt is rendered with: "auto" is "chat" when the tokenizer has a chat
    template, else "plain"; any other name is itself."""
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    return template


def prompt_ids(problem: str, template: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the rendered prompt. "auto" uses the chat template when the tokenizer has one."""
    template = resolve_template(template, tokenizer)
    if template == "chat":
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem}], add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tokenizer(TEMPLATES[template].format(prompt=problem))["input_ids"]
