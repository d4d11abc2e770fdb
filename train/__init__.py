"""Student training: SFT with Unsloth (or transformers + PEFT + TRL), model loading and saving."""
