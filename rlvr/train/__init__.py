"""Training loops: supervised fine-tuning (sft.py) and RL (rl.py), and their checkpoints."""
