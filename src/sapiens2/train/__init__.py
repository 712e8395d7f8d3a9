"""Fine-tuning: losses, recipes, optimiser, the trainer and its distributed strategies."""
